//! Open-loop load generator for the reflex service's `POST /preprocess`.
//!
//! Sends at a fixed rate over a fixed number of HTTP/1.1 keep-alive connections and measures
//! each latency from the moment the request was *scheduled*, not sent, so a slow server cannot
//! hide its queueing (no coordinated omission). Every body is distinct (a counter in the text),
//! so the cache never answers and every request is a full scan.
//!
//! ```sh
//! cargo run --release --example reflex_load -- http://127.0.0.1:8080 5000 16 10 500
//! #                                             url                  rps  conns secs body-bytes
//! ```
//!
//! With a body size of 0 and a path (`… 5000 16 10 0 /health`) it sends `GET path` instead: the
//! same load pattern with no scan, the floor the service cannot go below.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool"
)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const PROSE: &str = "Could you help me refactor the billing service? The nightly job in cron runs at 02:00 and \
takes about 45 minutes, mostly in the reconcile step that loads 120000 rows into memory. I would like to stream \
the rows instead, keep the retry logic, and add a metric for the batch size. The code lives in src/billing/job.rs \
and the docs are at https://wiki.example.com/billing/runbook. We deploy with make && make install on Debian 12. ";

/// A JSON body of exactly `size` bytes (when `size` allows) with `n` in its text.
fn body(n: u64, size: usize) -> Bytes {
    let head = format!("{{\"input_text\":\"request {n}: ");
    let tail = "\"}";
    let room = size.saturating_sub(head.len() + tail.len());
    let mut text: String = PROSE.chars().cycle().take(room).collect();
    text.truncate(room);
    Bytes::from(format!("{head}{text}{tail}"))
}

struct Outcome {
    /// From the scheduled send time (includes any wait for the connection or the timer).
    latencies_us: Vec<u64>,
    /// From the moment the request was handed to the connection (the service time alone).
    service_us: Vec<u64>,
    errors: u64,
}

/// The schedule every connection follows.
#[derive(Clone)]
struct Plan {
    authority: String,
    connections: u64,
    rate: f64,
    start: Instant,
    warmup: Instant,
    until: Instant,
    size: usize,
    /// `GET` this path instead of `POST /preprocess` (body size 0).
    get_path: Option<String>,
}

async fn connection(plan: Plan, index: u64) -> anyhow::Result<Outcome> {
    let Plan {
        authority,
        connections,
        rate,
        start,
        warmup,
        until,
        size,
        get_path,
    } = plan;
    let stream = TcpStream::connect(&authority).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut out = Outcome {
        latencies_us: Vec::new(),
        service_us: Vec::new(),
        errors: 0,
    };
    let mut i = 0u64;
    loop {
        let slot = i * connections + index;
        let due = start + Duration::from_secs_f64(slot as f64 / rate);
        if due >= until {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let request = match &get_path {
            Some(path) => Request::get(path.as_str())
                .header("host", &authority)
                .body(Full::new(Bytes::new()))?,
            None => Request::post("/preprocess")
                .header("host", &authority)
                .header("content-type", "application/json")
                .body(Full::new(body(slot, size)))?,
        };
        let sent = Instant::now();
        let ok = match sender.send_request(request).await {
            Ok(response) => {
                let status = response.status();
                let drained = response.into_body().collect().await.is_ok();
                status.is_success() && drained
            }
            Err(_) => false,
        };
        if due >= warmup {
            if ok {
                out.latencies_us.push(due.elapsed().as_micros() as u64);
                out.service_us.push(sent.elapsed().as_micros() as u64);
            } else {
                out.errors += 1;
            }
        }
        if !ok {
            break;
        }
        i += 1;
    }
    Ok(out)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: reflex_load URL RATE CONNECTIONS SECONDS BODY_BYTES [GET_PATH]";
    let (url, rate, connections, seconds, size, get_path) = match args.as_slice() {
        [_, url, rate, connections, seconds, size] => (url, rate, connections, seconds, size, None),
        [_, url, rate, connections, seconds, size, path]
            if size == "0" && path.starts_with('/') =>
        {
            (url, rate, connections, seconds, size, Some(path.clone()))
        }
        _ => anyhow::bail!(usage),
    };
    let authority = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("only http:// URLs: {usage}"))?
        .trim_end_matches('/')
        .to_owned();
    let rate: f64 = rate.parse()?;
    let connections: u64 = connections.parse()?;
    let seconds: f64 = seconds.parse()?;
    let size: usize = size.parse()?;
    let warmup_secs = 2.0_f64.min(seconds / 4.0);

    let start = Instant::now() + Duration::from_millis(200);
    let warmup = start + Duration::from_secs_f64(warmup_secs);
    let until = start + Duration::from_secs_f64(seconds);
    let body_bytes = if get_path.is_some() {
        0
    } else {
        body(0, size).len()
    };
    let plan = Plan {
        authority,
        connections,
        rate,
        start,
        warmup,
        until,
        size,
        get_path,
    };
    let tasks: Vec<_> = (0..connections)
        .map(|k| tokio::spawn(connection(plan.clone(), k)))
        .collect();
    let mut latencies = Vec::new();
    let mut service = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let outcome = task.await??;
        latencies.extend(outcome.latencies_us);
        service.extend(outcome.service_us);
        errors += outcome.errors;
    }
    latencies.sort_unstable();
    service.sort_unstable();
    let measured = seconds - warmup_secs;
    println!(
        "{{\"target_rps\":{rate},\"connections\":{connections},\"body_bytes\":{},\"measured_seconds\":{measured},\
\"ok\":{},\"errors\":{errors},\"achieved_rps\":{:.0},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\
\"service_p50_us\":{},\"service_p99_us\":{}}}",
        body_bytes,
        latencies.len(),
        latencies.len() as f64 / measured,
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 99.9),
        latencies.last().copied().unwrap_or(0),
        percentile(&service, 50.0),
        percentile(&service, 99.0),
    );
    Ok(())
}
