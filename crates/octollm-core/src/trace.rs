//! W3C Trace Context (`traceparent`): one trace id follows a task from the request that
//! submitted it through the reflex layer, the orchestrator and every arm call, so the logs
//! (and traces, with OTLP export on) of all services can be joined.
//!
//! `traceparent: 00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`. A header that
//! does not parse is ignored and a new trace starts, as the recommendation asks.

use std::fmt;

use rand::Rng;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

const SAMPLED: u8 = 0x01;

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Lowercase hex only (uppercase is invalid in `traceparent`).
fn decode_hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    Some(out)
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

impl TraceContext {
    /// Parses a `traceparent` header. Version `00` must be exactly 55 characters; a later
    /// version is read by its first four fields, as the recommendation asks; `ff` and
    /// all-zero ids are invalid.
    pub fn parse(header: &str) -> Option<Self> {
        let bytes = header.trim().as_bytes();
        if bytes.len() < 55 {
            return None;
        }
        let version = decode_hex::<1>(&bytes[0..2])?[0];
        if version == 0xff || (version == 0 && bytes.len() != 55) {
            return None;
        }
        if version != 0 && bytes.len() > 55 && bytes[55] != b'-' {
            return None;
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let trace_id = decode_hex::<16>(&bytes[3..35])?;
        let span_id = decode_hex::<8>(&bytes[36..52])?;
        let flags = decode_hex::<1>(&bytes[53..55])?[0];
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// A context from its parts (an exporting tracer's span); `None` for all-zero ids.
    pub fn from_parts(trace_id: [u8; 16], span_id: [u8; 8], sampled: bool) -> Option<Self> {
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(Self {
            trace_id,
            span_id,
            flags: if sampled { SAMPLED } else { 0 },
        })
    }

    /// A new trace (sampled), for a request that arrived without one.
    pub fn root() -> Self {
        let mut rng = rand::rng();
        let mut trace_id = [0u8; 16];
        rng.fill(&mut trace_id);
        if trace_id == [0; 16] {
            trace_id[15] = 1;
        }
        Self {
            trace_id,
            span_id: Self::new_span_id(&mut rng),
            flags: SAMPLED,
        }
    }

    /// The context of work done on behalf of this one: same trace, a new span id.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id: Self::new_span_id(&mut rand::rng()),
            flags: self.flags,
        }
    }

    fn new_span_id(rng: &mut impl Rng) -> [u8; 8] {
        let mut span_id = [0u8; 8];
        rng.fill(&mut span_id);
        if span_id == [0; 8] {
            span_id[7] = 1;
        }
        span_id
    }

    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    pub fn span_id(&self) -> [u8; 8] {
        self.span_id
    }

    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The trace id as 32 lowercase hex digits (what logs carry).
    pub fn trace_id_hex(&self) -> String {
        TraceIdHex(self.trace_id).to_string()
    }

    /// The `traceparent` header value naming this context's span as the parent (version 00).
    pub fn header(&self) -> String {
        self.to_string()
    }
}

struct TraceIdHex([u8; 16]);

impl fmt::Display for TraceIdHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        write_hex(f, &self.trace_id)?;
        f.write_str("-")?;
        write_hex(f, &self.span_id)?;
        write!(f, "-{:02x}", self.flags)
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceContext({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::TraceContext;
    use proptest::prelude::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_recommendation_s_example_round_trips() {
        let ctx = TraceContext::parse(EXAMPLE).unwrap();
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(ctx.sampled());
        assert_eq!(ctx.header(), EXAMPLE);
    }

    #[test]
    fn invalid_headers_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            // uppercase hex
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // all-zero ids
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // version ff, and version 00 with extra fields
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            // wrong separators, non-hex
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            // a later version must still separate its extra fields with '-'
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_fields() {
        let ctx = TraceContext::parse(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-something",
        )
        .unwrap();
        // We answer in the version we speak.
        assert_eq!(ctx.header(), EXAMPLE);
    }

    #[test]
    fn parts_make_a_context_unless_zero() {
        let ctx = TraceContext::from_parts([7; 16], [9; 8], false).unwrap();
        assert_eq!(
            ctx.header(),
            "00-07070707070707070707070707070707-0909090909090909-00"
        );
        assert!(!ctx.sampled());
        assert_eq!(TraceContext::from_parts([0; 16], [9; 8], true), None);
        assert_eq!(TraceContext::from_parts([7; 16], [0; 8], true), None);
    }

    #[test]
    fn children_keep_the_trace_and_change_the_span() {
        let parent = TraceContext::parse(EXAMPLE).unwrap();
        let child = parent.child();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.span_id(), parent.span_id());
        assert_eq!(child.sampled(), parent.sampled());
        let root = TraceContext::root();
        assert_ne!(root.trace_id(), parent.trace_id());
        assert!(root.sampled());
    }

    proptest! {
        #[test]
        fn what_we_write_we_read_back(trace in any::<[u8; 16]>(), span in any::<[u8; 8]>(), flags in any::<u8>()) {
            prop_assume!(trace != [0; 16] && span != [0; 8]);
            let ctx = TraceContext { trace_id: trace, span_id: span, flags };
            prop_assert_eq!(TraceContext::parse(&ctx.header()), Some(ctx));
        }

        #[test]
        fn parsing_never_panics(text in ".{0,80}") {
            let _ = TraceContext::parse(&text);
        }
    }
}
