//! Logging: JSON or human-readable, to stderr through the redacting writer
//! ([`crate::log_redaction`]), filtered by `log.level` (RUST_LOG syntax).
//! Traces: with `log.otlp_endpoint` set (`OTEL_EXPORTER_OTLP_ENDPOINT`), spans are exported
//! over OTLP/HTTP (cargo feature `otlp`, on by default); nothing is sent anywhere otherwise.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{Config, LogFormat};

/// Keeps the exporter alive; dropping it sends what is still buffered.
pub struct Guard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "traces still buffered could not be exported");
        }
    }
}

/// Installs the logger (and the trace exporter when configured). Call before the async
/// runtime starts: the exporter runs on its own thread with a blocking HTTP client.
/// `service` names this process in traces (`octollm-orchestrator`, `octollm-arm-coder`, …);
/// `quiet` lowers the default level for interactive commands whose output is the point.
pub fn init(config: &Config, service: &str, quiet: bool) -> anyhow::Result<Guard> {
    let level = if quiet && config.log.level == "info" {
        "warn"
    } else {
        config.log.level.as_str()
    };
    // llama.cpp and sqlx are chatty at info.
    let filter = EnvFilter::try_new(format!("{level},sqlx=warn,hyper=warn"))
        .map_err(|e| anyhow::anyhow!("invalid log level {level:?}: {e}"))?;
    let fmt = tracing_subscriber::fmt::layer().with_writer(crate::log_redaction::RedactingStderr);
    let fmt = match config.log.format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
        LogFormat::Pretty => fmt.compact().boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    if config.log.otlp_endpoint.is_empty() {
        registry
            .try_init()
            .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
        return Ok(Guard {
            #[cfg(feature = "otlp")]
            provider: None,
        });
    }
    otlp::init(registry, config, service)
}

use tracing_subscriber::Layer as _;

#[cfg(feature = "otlp")]
mod otlp {
    use octollm_core::TraceContext;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
        TracerProvider as _,
    };
    use opentelemetry_otlp::WithExportConfig as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    use super::Guard;
    use crate::config::Config;

    pub fn init<S>(registry: S, config: &Config, service: &str) -> anyhow::Result<Guard>
    where
        S: tracing::Subscriber
            + for<'a> tracing_subscriber::registry::LookupSpan<'a>
            + Send
            + Sync
            + 'static,
        S: tracing_subscriber::layer::SubscriberExt,
    {
        let base = config.log.otlp_endpoint.trim_end_matches('/');
        let endpoint = if base.ends_with("/v1/traces") {
            base.to_owned()
        } else {
            format!("{base}/v1/traces")
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .with_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot set up the OTLP exporter: {e}"))?;
        let name = if config.log.service_name.is_empty() {
            service.to_owned()
        } else {
            config.log.service_name.clone()
        };
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(name)
                    .build(),
            )
            .build();
        let tracer = provider.tracer("octollm");
        registry
            .with(tracing_opentelemetry::layer().with_tracer(tracer))
            .try_init()
            .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
        octollm_orchestrator::trace_link::install(octollm_orchestrator::trace_link::TraceLink {
            attach,
            current,
        });
        Ok(Guard {
            provider: Some(provider),
        })
    }

    fn attach(span: &tracing::Span, parent: Option<TraceContext>) -> Option<TraceContext> {
        if let Some(parent) = parent {
            let remote = SpanContext::new(
                TraceId::from_bytes(parent.trace_id()),
                SpanId::from_bytes(parent.span_id()),
                if parent.sampled() {
                    TraceFlags::SAMPLED
                } else {
                    TraceFlags::default()
                },
                true,
                TraceState::default(),
            );
            // Fails only for a span that is disabled (filtered out): then it has no context.
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        }
        of(span)
    }

    fn current() -> Option<TraceContext> {
        of(&tracing::Span::current())
    }

    fn of(span: &tracing::Span) -> Option<TraceContext> {
        let context = span.context();
        let span_ref = context.span();
        let ids = span_ref.span_context();
        if !ids.is_valid() {
            return None;
        }
        TraceContext::from_parts(
            ids.trace_id().to_bytes(),
            ids.span_id().to_bytes(),
            ids.is_sampled(),
        )
    }
}

#[cfg(not(feature = "otlp"))]
mod otlp {
    use super::Guard;
    use crate::config::Config;

    pub fn init<S>(_registry: S, _config: &Config, _service: &str) -> anyhow::Result<Guard> {
        anyhow::bail!(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but this build has no OTLP export (cargo feature `otlp`)"
        )
    }
}
