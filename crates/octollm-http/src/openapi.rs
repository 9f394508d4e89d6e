//! The OpenAPI 3.1 documents every service serves at `/openapi.json`, generated: the schemas
//! from the request and response types (`schemars`), the operations from each service's
//! route table (what a route needs, what it answers), so a route cannot exist without its
//! entry and its security is what the middleware applies in the mode the service runs in.

use http::Method;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::auth::Access;
use crate::error::ErrorBody;

/// The API key schemes: `X-API-Key`, or the key as a bearer token.
const API_KEY: &str = "ApiKey";
const BEARER: &str = "Bearer";

/// A document being built.
pub struct Document {
    generator: SchemaGenerator,
    paths: Map<String, Value>,
    /// Whether routes that take a key need one (a service off loopback): their security is
    /// then required, else optional.
    keys_required: bool,
    title: String,
    description: String,
}

impl Document {
    pub fn new(title: &str, description: &str, keys_required: bool) -> Self {
        let settings = SchemaSettings::draft2020_12().with(|s| {
            s.definitions_path = "/components/schemas".into();
        });
        Self {
            generator: SchemaGenerator::new(settings),
            paths: Map::new(),
            keys_required,
            title: title.to_owned(),
            description: description.to_owned(),
        }
    }

    pub fn keys_required(&self) -> bool {
        self.keys_required
    }

    /// The schema of `T`: a `$ref` to its component for named types.
    pub fn schema<T: JsonSchema>(&mut self) -> Value {
        self.generator.subschema_for::<T>().to_value()
    }

    /// Adds `operation` as `method path`.
    pub fn add(&mut self, method: &Method, path: &str, operation: Operation) {
        let item = self
            .paths
            .entry(path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            item.insert(
                method.as_str().to_ascii_lowercase(),
                operation.finish(self.keys_required),
            );
        }
    }

    /// The operations already added, by path (for documents built from others).
    pub fn paths(&self) -> &Map<String, Value> {
        &self.paths
    }

    /// Adds the paths of another document that `take` accepts (the orchestrator's `/tasks…`,
    /// behind the reflex layer), `adjust`ed, with the schemas they use.
    pub fn merge(
        &mut self,
        other: &Value,
        take: impl Fn(&str) -> bool,
        mut adjust: impl FnMut(&mut Map<String, Value>),
    ) {
        if let Some(paths) = other.get("paths").and_then(Value::as_object) {
            for (path, item) in paths.iter().filter(|(p, _)| take(p)) {
                let mut item = item.clone();
                if let Some(operations) = item.as_object_mut() {
                    for op in operations.values_mut().filter_map(Value::as_object_mut) {
                        adjust(op);
                    }
                }
                self.paths.insert(path.clone(), item);
            }
        }
        if let Some(schemas) = other
            .pointer("/components/schemas")
            .and_then(Value::as_object)
        {
            let definitions = self.generator.definitions_mut();
            for (name, schema) in schemas {
                definitions
                    .entry(name.clone())
                    .or_insert_with(|| schema.clone());
            }
        }
    }

    pub fn finish(mut self) -> Value {
        let schemas = Value::Object(self.generator.take_definitions(true));
        let mut document = json!({
            "openapi": "3.1.0",
            "info": {
                "title": self.title,
                "version": env!("CARGO_PKG_VERSION"),
                "description": self.description,
            },
            "paths": self.paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {
                    API_KEY: {"type": "apiKey", "in": "header", "name": "X-API-Key",
                        "description": "An API key (`octollm keys create`)."},
                    BEARER: {"type": "http", "scheme": "bearer",
                        "description": "An API key as a bearer token (or, on an arm service, the orchestrator's capability token)."},
                },
            },
        });
        bound_integers(&mut document);
        document
    }
}

/// Integers get the bounds of their Rust type (a client's 2^64 would not parse), and only
/// OpenAPI's own formats stay.
fn bound_integers(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(format)) = map.get("format").cloned() {
                let bounds: Option<(i128, i128)> = match format.as_str() {
                    "uint8" => Some((0, u8::MAX.into())),
                    "uint16" => Some((0, u16::MAX.into())),
                    "uint32" | "uint" => Some((0, u32::MAX.into())),
                    "uint64" => Some((0, u64::MAX.into())),
                    "int8" => Some((i8::MIN.into(), i8::MAX.into())),
                    "int16" => Some((i16::MIN.into(), i16::MAX.into())),
                    "int32" | "int" => Some((i32::MIN.into(), i32::MAX.into())),
                    "int64" => Some((i64::MIN.into(), i64::MAX.into())),
                    _ => None,
                };
                if let Some((lo, hi)) = bounds {
                    map.entry("minimum").or_insert_with(|| number(lo));
                    map.entry("maximum").or_insert_with(|| number(hi));
                    if !matches!(format.as_str(), "int32" | "int64") {
                        map.remove("format");
                    }
                }
            }
            for v in map.values_mut() {
                bound_integers(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

fn number(v: i128) -> Value {
    if let Ok(u) = u64::try_from(v) {
        return Value::from(u);
    }
    Value::from(i64::try_from(v).unwrap_or(i64::MIN))
}

/// One operation being described.
pub struct Operation {
    summary: String,
    access: Access,
    parameters: Vec<Value>,
    body: Option<Value>,
    responses: Map<String, Value>,
    extra: Map<String, Value>,
}

impl Operation {
    pub fn new(summary: &str, access: Access) -> Self {
        Self {
            summary: summary.to_owned(),
            access,
            parameters: Vec::new(),
            body: None,
            responses: Map::new(),
            extra: Map::new(),
        }
    }

    /// A JSON request body of `schema`; a body brings its refusals (400, 413, 415).
    pub fn json_body(mut self, doc: &mut Document, schema: Value) -> Self {
        self.body = Some(json!({
            "required": true,
            "content": {"application/json": {"schema": schema}},
        }));
        self.error(doc, 400, "The body is malformed or breaks the schema")
            .error(doc, 413, "The body is over the size limit")
            .error(doc, 415, "The body is not JSON")
    }

    pub fn param(
        mut self,
        location: &str,
        name: &str,
        required: bool,
        schema: Value,
        description: &str,
    ) -> Self {
        self.parameters.push(json!({
            "in": location,
            "name": name,
            "required": required,
            "schema": schema,
            "description": description,
        }));
        self
    }

    /// A success answer with a JSON body.
    pub fn json(self, status: u16, description: &str, schema: Value) -> Self {
        self.content(status, description, "application/json", schema)
    }

    /// A success answer of `media_type`.
    pub fn content(
        mut self,
        status: u16,
        description: &str,
        media_type: &str,
        schema: Value,
    ) -> Self {
        self.responses.insert(
            status.to_string(),
            json!({
                "description": description,
                "headers": {"X-Request-ID": {"schema": {"type": "string"},
                    "description": "The request's id, as sent or generated"}},
                "content": {media_type: {"schema": schema}},
            }),
        );
        self
    }

    /// A success answer without a body.
    pub fn empty(mut self, status: u16, description: &str) -> Self {
        self.responses
            .insert(status.to_string(), json!({"description": description}));
        self
    }

    /// Headers a documented answer carries.
    pub fn headers(mut self, status: u16, headers: &[(&str, Value, &str)]) -> Self {
        if let Some(Value::Object(response)) = self.responses.get_mut(&status.to_string()) {
            let entry = response
                .entry("headers")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(map) = entry {
                for (name, schema, description) in headers {
                    map.insert(
                        (*name).to_owned(),
                        json!({"schema": schema, "description": description}),
                    );
                }
            }
        }
        self
    }

    /// An error answer: the one error body.
    pub fn error(mut self, doc: &mut Document, status: u16, description: &str) -> Self {
        let schema = doc.schema::<ErrorBody>();
        let mut response = json!({
            "description": description,
            "content": {"application/json": {"schema": schema}},
        });
        if matches!(status, 429 | 503) {
            response["headers"] = json!({"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"},
                "description": "Seconds to wait"}});
        }
        if status == 401 {
            response["headers"] = json!({"WWW-Authenticate": {"schema": {"type": "string"}}});
        }
        self.responses.insert(status.to_string(), response);
        self
    }

    /// Any other field of the operation (`x-…` extensions, a description).
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    fn finish(self, keys_required: bool) -> Value {
        let mut op = Map::new();
        op.insert("summary".into(), Value::from(self.summary));
        let requirement = json!([{API_KEY: []}, {BEARER: []}]);
        let security = match self.access {
            Access::Open => json!([]),
            // Where keys are optional a request may bring none (an empty requirement).
            _ if !keys_required => json!([{}, {API_KEY: []}, {BEARER: []}]),
            _ => requirement,
        };
        op.insert("security".into(), security);
        if !self.parameters.is_empty() {
            op.insert("parameters".into(), Value::Array(self.parameters));
        }
        if let Some(body) = self.body {
            op.insert("requestBody".into(), body);
        }
        let mut responses = self.responses;
        if self.access != Access::Open {
            let schema = json!({"$ref": "#/components/schemas/ErrorBody"});
            // Checking the key reads the database.
            responses.entry("503").or_insert_with(|| {
                json!({"description": "A dependency (the database) is unavailable",
                    "headers": {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"}}},
                    "content": {"application/json": {"schema": schema.clone()}}})
            });
            responses.entry("401").or_insert_with(|| {
                json!({"description": "No valid API key",
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                    "content": {"application/json": {"schema": schema.clone()}}})
            });
            if let Access::Scope(scope) = self.access {
                responses.entry("403").or_insert_with(|| {
                    json!({"description": format!("The key lacks the {scope} scope"),
                        "content": {"application/json": {"schema": schema}}})
                });
            }
        }
        responses.entry("500").or_insert_with(|| {
            json!({"description": "Internal error (the cause is logged, never sent)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
        });
        op.insert("responses".into(), Value::Object(responses));
        op.extend(self.extra);
        Value::Object(op)
    }
}

/// The schema of a string matching `pattern`.
pub fn pattern(pattern: &str) -> Value {
    json!({"type": "string", "pattern": pattern})
}

/// The schema of an integer in `min..=max`.
pub fn integer(min: i64, max: i64) -> Value {
    json!({"type": "integer", "minimum": min, "maximum": max})
}

/// A document serialised once, for every `GET /openapi.json`.
pub fn prepared(document: &Value) -> bytes::Bytes {
    serde_json::to_vec(document).unwrap_or_default().into()
}

/// The answer to `GET /openapi.json`.
pub async fn serve(document: bytes::Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    ([(http::header::CONTENT_TYPE, "application/json")], document).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_bounded_by_their_type() {
        let mut doc = json!({"a": {"type": "integer", "format": "uint64", "minimum": 0},
            "b": {"type": ["integer", "null"], "format": "uint32", "maximum": 9},
            "c": {"type": "string", "format": "date-time"}});
        bound_integers(&mut doc);
        assert_eq!(
            doc["a"],
            json!({"type": "integer", "minimum": 0, "maximum": u64::MAX})
        );
        assert_eq!(
            doc["b"],
            json!({"type": ["integer", "null"], "minimum": 0, "maximum": 9})
        );
        assert_eq!(doc["c"]["format"], "date-time");
    }

    #[test]
    fn security_follows_the_route_and_the_mode() {
        for (required, access, expected) in [
            (true, Access::AnyKey, json!([{API_KEY: []}, {BEARER: []}])),
            (
                false,
                Access::AnyKey,
                json!([{}, {API_KEY: []}, {BEARER: []}]),
            ),
            (true, Access::Open, json!([])),
        ] {
            let op = Operation::new("x", access).finish(required);
            assert_eq!(op["security"], expected, "{required} {access:?}");
            assert_eq!(op["responses"].get("401").is_some(), access != Access::Open);
        }
    }
}
