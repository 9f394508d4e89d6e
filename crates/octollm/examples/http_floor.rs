//! The floor of the reflex service's load test: a bare hyper HTTP/1.1 server on one
//! single-threaded runtime that reads each request body and answers a fixed JSON body of the
//! size `/preprocess` answers, with no routing, middleware, scan, cache or metrics. Whatever it
//! costs per request under the same load is what loopback TCP and HTTP cost on this host before
//! any of our code runs (`scripts/bench-reflex.sh` runs it).
//!
//! ```sh
//! cargo run --release --example http_floor -- 127.0.0.1:18080
//! ```
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool"
)]

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// About the size of a `/preprocess` answer for the load test's 500-byte bodies.
const ANSWER_BYTES: usize = 1_100;

async fn answer(
    request: Request<Incoming>,
    body: Bytes,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the whole body, as the service does before it can parse it.
    let _ = request.into_body().collect().await;
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap_or_default())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let bind = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: http_floor ADDRESS"))?;
    let listener = TcpListener::bind(&bind).await?;
    let mut text = String::from("{\"filler\":\"");
    text.extend(std::iter::repeat_n('x', ANSWER_BYTES.saturating_sub(14)));
    text.push_str("\"}");
    let body = Bytes::from(text);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let body = body.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |r| answer(r, body.clone()));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection: {e}");
            }
        });
    }
}
