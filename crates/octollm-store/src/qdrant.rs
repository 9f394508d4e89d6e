//! The distributed vector index: Qdrant through the official `qdrant-client` crate (gRPC,
//! port 6334), the other implementation of [`VectorStore`] beside the embedded index.
//! Built with the `qdrant` cargo feature.
//!
//! Qdrant point ids are unsigned integers or UUIDs; ours are any string, so each point's id
//! is a name-based UUID of the string (SHA-256, version and variant bits set) and the string
//! itself rides in the payload under [`ID_FIELD`]. Collections are made on first upsert with
//! cosine distance and the vector's dimension.

use async_trait::async_trait;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, DeletePointsBuilder, Distance, Filter,
    PointId, PointStruct, PointsIdsList, QueryPointsBuilder, UpsertPointsBuilder,
    VectorParamsBuilder,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::knowledge::{VectorHit, VectorStore};

/// The payload field holding the caller's id.
pub const ID_FIELD: &str = "_octollm_id";

pub struct QdrantStore {
    client: Qdrant,
}

fn unavailable(e: QdrantError) -> StoreError {
    StoreError::Unavailable(format!("qdrant: {e}"))
}

/// A name-based UUID (RFC 9562 layout, version 8: custom) of `id`.
fn point_uuid(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

impl QdrantStore {
    /// `url` is the gRPC endpoint (`http://qdrant:6334`). Connects lazily: a server that is
    /// down makes the first call fail, not this one.
    pub fn connect(url: &str, api_key: Option<String>) -> Result<Self, StoreError> {
        let client = Qdrant::from_url(url)
            .api_key(api_key)
            .timeout(std::time::Duration::from_secs(10))
            .connect_timeout(std::time::Duration::from_secs(5))
            // The check blocks the calling thread and prints to stdout.
            .skip_compatibility_check()
            .build()
            .map_err(unavailable)?;
        Ok(Self { client })
    }

    async fn ensure_collection(&self, name: &str, dimension: usize) -> Result<(), StoreError> {
        if self
            .client
            .collection_exists(name)
            .await
            .map_err(unavailable)?
        {
            return Ok(());
        }
        let created = self
            .client
            .create_collection(
                CreateCollectionBuilder::new(name)
                    .vectors_config(VectorParamsBuilder::new(dimension as u64, Distance::Cosine)),
            )
            .await;
        match created {
            Ok(_) => Ok(()),
            // Another replica made it between the check and the create.
            Err(e) if self.client.collection_exists(name).await.unwrap_or(false) => {
                tracing::debug!(error = %e, collection = name, "collection made concurrently");
                Ok(())
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.client.health_check().await.map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl VectorStore for QdrantStore {
    async fn upsert(
        &self,
        collection: &str,
        id: &str,
        vector: &[f32],
        payload: serde_json::Value,
    ) -> Result<(), StoreError> {
        if vector.is_empty() {
            return Err(StoreError::Invalid("empty vector".into()));
        }
        self.ensure_collection(collection, vector.len()).await?;
        let mut fields = match payload {
            serde_json::Value::Object(map) => map,
            serde_json::Value::Null => serde_json::Map::new(),
            other => {
                return Err(StoreError::Invalid(format!(
                    "a vector's payload must be a JSON object, got {other}"
                )));
            }
        };
        fields.insert(ID_FIELD.into(), serde_json::Value::String(id.to_owned()));
        let payload = Payload::from(fields);
        let point = PointStruct::new(point_uuid(id), vector.to_vec(), payload);
        self.client
            .upsert_points(UpsertPointsBuilder::new(collection, vec![point]).wait(true))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn search(
        &self,
        collection: &str,
        vector: &[f32],
        limit: u32,
    ) -> Result<Vec<VectorHit>, StoreError> {
        if !self
            .client
            .collection_exists(collection)
            .await
            .map_err(unavailable)?
        {
            return Ok(Vec::new());
        }
        let response = self
            .client
            .query(
                QueryPointsBuilder::new(collection)
                    .query(vector.to_vec())
                    .limit(u64::from(limit))
                    .with_payload(true),
            )
            .await
            .map_err(unavailable)?;
        response
            .result
            .into_iter()
            .map(|point| {
                let mut payload: serde_json::Map<String, serde_json::Value> = point
                    .payload
                    .into_iter()
                    .map(|(k, v)| (k, v.into_json()))
                    .collect();
                let id = match payload.remove(ID_FIELD) {
                    Some(serde_json::Value::String(id)) => id,
                    _ => {
                        return Err(StoreError::Corrupt(format!(
                            "qdrant point without {ID_FIELD} in {collection}"
                        )));
                    }
                };
                Ok(VectorHit {
                    id,
                    score: point.score,
                    payload: serde_json::Value::Object(payload),
                })
            })
            .collect()
    }

    async fn delete(&self, collection: &str, id: &str) -> Result<bool, StoreError> {
        if !self
            .client
            .collection_exists(collection)
            .await
            .map_err(unavailable)?
        {
            return Ok(false);
        }
        let point: PointId = point_uuid(id).into();
        let present = self
            .client
            .count(
                CountPointsBuilder::new(collection)
                    .filter(Filter::must([Condition::has_id([point.clone()])]))
                    .exact(true),
            )
            .await
            .map_err(unavailable)?
            .result
            .map_or(0, |r| r.count);
        if present == 0 {
            return Ok(false);
        }
        self.client
            .delete_points(
                DeletePointsBuilder::new(collection)
                    .points(PointsIdsList { ids: vec![point] })
                    .wait(true),
            )
            .await
            .map_err(unavailable)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::point_uuid;

    #[test]
    fn point_ids_are_stable_uuids() {
        let a = point_uuid("chunk-1");
        assert_eq!(a, point_uuid("chunk-1"));
        assert_ne!(a, point_uuid("chunk-2"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8", "version nibble");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "variant bits");
    }
}
