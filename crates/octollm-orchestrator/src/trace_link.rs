//! The bridge between our W3C trace context ([`TraceContext`]) and an exporting tracer.
//!
//! Without one (the default) a hop's context is a child of the caller's, or a new trace, and
//! lives in logs and `traceparent` headers only. With OTLP export on, the binary installs a
//! [`TraceLink`] so that each hop's context *is* its exported span's: the request span is
//! parented to the caller's context and the ids sent onwards are the exported span's ids,
//! so the collector sees one connected trace across services.

use std::sync::OnceLock;

use octollm_core::TraceContext;

pub struct TraceLink {
    /// Makes `span` a child of `parent` (a root without one); returns the span's context.
    pub attach: fn(&tracing::Span, Option<TraceContext>) -> Option<TraceContext>,
    /// The context of the current span.
    pub current: fn() -> Option<TraceContext>,
}

static LINK: OnceLock<TraceLink> = OnceLock::new();

/// Installs the link once per process; false when one was already installed.
pub fn install(link: TraceLink) -> bool {
    LINK.set(link).is_ok()
}

/// The context of a new hop whose work runs in `span`.
pub fn attach(span: &tracing::Span, parent: Option<TraceContext>) -> TraceContext {
    LINK.get()
        .and_then(|link| (link.attach)(span, parent))
        .unwrap_or_else(|| parent.map_or_else(TraceContext::root, |p| p.child()))
}

/// The exported context of the current span, when a link is installed.
pub fn current() -> Option<TraceContext> {
    LINK.get().and_then(|link| (link.current)())
}
