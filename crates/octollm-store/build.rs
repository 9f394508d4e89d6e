//! Whether a Qdrant server is at hand for the Qdrant contract test: `QDRANT_URL` (a running
//! server) or `OCTOLLM_QDRANT_BIN` (a Qdrant binary, or its gzip, to start; `scripts/env.sh`
//! sets it when the workplace's build is found). Without either the test is ignored, with
//! its reason, rather than passing without testing anything.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(qdrant_server)");
    println!("cargo::rerun-if-env-changed=QDRANT_URL");
    println!("cargo::rerun-if-env-changed=OCTOLLM_QDRANT_BIN");
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty());
    if set("QDRANT_URL") || set("OCTOLLM_QDRANT_BIN") {
        println!("cargo::rustc-cfg=qdrant_server");
    }
}
