//! `octollm kb add` chunks, embeds (all-MiniLM-L6-v2, in process) and indexes documents; a
//! retriever step then finds the right one by hybrid search (BM25 + vectors, fused by rank).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

mod common;
use octollm_test_support::postgres as pg;

use std::process::Command;

fn octollm(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_octollm"))
        .args(args)
        .env("OCTOLLM_DATA_DIR", dir.join("data"))
        .env(
            "OCTOLLM_MODEL_DIR",
            octollm_llm::models::default_model_dir(),
        )
        .env("OCTOLLM_LLM_PROVIDER", "scripted")
        .env("OCTOLLM_LLM_SCRIPT", dir.join("script.json"))
        .output()
        .unwrap()
}

#[test]
fn added_documents_are_found_by_a_retriever_step() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("nested")).unwrap();
    std::fs::write(
        docs.join("octopus.md"),
        "# Octopus defences\n\nWhen threatened, an octopus squirts a cloud of dark ink and jets away. \
         It can also change the colour and texture of its skin to hide against rocks.",
    )
    .unwrap();
    std::fs::write(
        docs.join("nested/cluster.txt"),
        "Kubernetes schedules pods onto nodes and restarts containers whose liveness probe fails.",
    )
    .unwrap();
    std::fs::write(docs.join("ignored.bin"), [0u8, 159, 146, 150]).unwrap();
    std::fs::write(
        dir.path().join("script.json"),
        serde_json::json!({"responses": [
            {"purpose": "planner", "json": {"steps": [
                {"step_id": "s1", "arm_id": "retriever", "description": "How does a cephalopod hide from predators", "dependencies": []}
            ]}}
        ]})
        .to_string(),
    )
    .unwrap();

    let added = octollm(dir.path(), &["kb", "add", docs.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&added.stdout);
    assert!(
        added.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("added")).count(),
        2,
        "{stdout}"
    );

    let run = octollm(
        dir.path(),
        &["run", "Find out how octopuses avoid predators", "--json"],
    );
    let task: serde_json::Value = serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&run.stderr)));
    assert_eq!(task["status"], "completed", "{task:#}");
    let step = task["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step_id"] == "s1")
        .unwrap();
    let results = step["output"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{step:#}");
    // "cephalopod" and "hide" share no keyword with the best answer's wording for the most
    // part; the embedding ranks the octopus document first.
    assert!(
        results[0]["source"]
            .as_str()
            .unwrap()
            .ends_with("octopus.md"),
        "{step:#}"
    );
    assert!(results[0]["score"].as_f64().unwrap() > results[1]["score"].as_f64().unwrap());
    assert!(
        step["output"]["citations"][0]
            .as_str()
            .unwrap()
            .ends_with("octopus.md")
    );

    // A missing path is a clear error.
    let missing = octollm(
        dir.path(),
        &["kb", "add", dir.path().join("nope").to_str().unwrap()],
    );
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
}

/// With `DATABASE_URL` on PostgreSQL the knowledge base is shared: documents added once with
/// `octollm kb add` are found by every retriever service, each its own process.
#[test]
fn every_retriever_replica_finds_documents_added_once() {
    let server = pg::PgServer::start();
    let url = server.database("octollm");
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        docs.join("octopus.md"),
        "Octopuses change the colour and texture of their skin to blend into rocks and coral, \
         and squirt ink to escape from predators.",
    )
    .unwrap();
    std::fs::write(
        docs.join("kubernetes.md"),
        "Kubernetes schedules pods onto nodes and restarts containers whose liveness probe fails.",
    )
    .unwrap();
    std::fs::write(dir.path().join("script.json"), r#"{"responses": []}"#).unwrap();
    let added = Command::new(env!("CARGO_BIN_EXE_octollm"))
        .args(["kb", "add", docs.to_str().unwrap()])
        .env("OCTOLLM_DATA_DIR", dir.path().join("cli-data"))
        .env(
            "OCTOLLM_MODEL_DIR",
            octollm_llm::models::default_model_dir(),
        )
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let env = [
        ("DATABASE_URL", url.clone()),
        (
            "OCTOLLM_MODEL_DIR",
            octollm_llm::models::default_model_dir()
                .display()
                .to_string(),
        ),
    ];
    // Each replica has its own data directory: nothing is shared but the database.
    let replicas: Vec<common::Process> = (0..2)
        .map(|_| common::spawn(dir.path(), &["serve", "arm", "retriever"], &env))
        .collect();
    for replica in &replicas {
        let found: serde_json::Value = common::runtime().block_on(async {
            reqwest::Client::new()
                .post(format!("{}/search", replica.base))
                .json(&serde_json::json!({"query": "How does a cephalopod hide from predators", "max_results": 2}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
        let results = found["results"]
            .as_array()
            .unwrap_or_else(|| panic!("{found}"));
        assert_eq!(results.len(), 2, "{found}");
        assert!(
            results[0]["source"]
                .as_str()
                .unwrap()
                .ends_with("octopus.md"),
            "{found}"
        );
    }
    drop(server);
}

/// `POST /documents` and `POST /search` on the orchestrator's API reach the retriever, so a
/// client of the public entry can fill and search the knowledge base; ingesting needs an
/// admin key, searching a key that reads tasks.
#[test]
fn the_api_ingests_documents_and_searches_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("script.json"), r#"{"responses": []}"#).unwrap();
    let admin = common::make_api_key(dir.path(), "admin");
    let reader = common::make_api_key(dir.path(), "tasks:read");
    let server = common::Server::start_with(
        dir.path(),
        octollm_test_support::free_port(),
        &[("OCTOLLM_REQUIRE_API_KEYS", "true".into())],
    );
    let call = |path: &str, key: &str, body: serde_json::Value| {
        common::post_with(
            &format!("{}{path}", server.base),
            body,
            &[("x-api-key", key.to_owned())],
        )
    };
    let document = serde_json::json!({
        "content": "The Kraken runbook: drain the node, cordon it, then restart the kubelet.",
        "source": "runbooks/kraken.md",
        "metadata": {"team": "platform"}
    });
    let (status, refused) = call("/documents", &reader, document.clone());
    assert_eq!(status, 403, "{refused}");
    let (status, ingested) = call("/documents", &admin, document);
    assert_eq!(status, 200, "{ingested}");
    assert_eq!(ingested["chunks"], 1, "{ingested}");

    for method in ["keyword", "hybrid"] {
        let (status, found) = call(
            "/search",
            &reader,
            serde_json::json!({"query": "kraken runbook kubelet", "method": method, "max_results": 3}),
        );
        assert_eq!(status, 200, "{found}");
        assert_eq!(
            found["results"][0]["source"], "runbooks/kraken.md",
            "{method}: {found}"
        );
    }
    let (status, bad) = call(
        "/search",
        &reader,
        serde_json::json!({"query": "", "max_results": 3}),
    );
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["code"], "validation_error", "{bad}");
    let (status, _) = common::post(
        &format!("{}/search", server.base),
        serde_json::json!({"query": "kraken"}),
    );
    assert_eq!(status, 401);
}
