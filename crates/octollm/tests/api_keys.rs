//! API keys end to end with the real binary: `octollm keys create|list|revoke` on the
//! server's database, a server that requires keys, `octollm task` with `--api-key`, and a
//! revoked key refused from the next request on. The key is printed once and never again
//! (not by `list`, not in the server's log, not in the database file).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

mod common;

use std::path::Path;

use common::{Server, free_port, write_script};

fn octollm(dir: &Path, args: &[&str]) -> (i32, String, String) {
    common::cli(dir, args)
}

fn status_with_key(url: &str, key: Option<&str>) -> u16 {
    common::runtime().block_on(async {
        let mut request = reqwest::Client::new().get(url);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        request.send().await.unwrap().status().as_u16()
    })
}

#[test]
fn keys_made_by_the_cli_open_the_api_until_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_script(dir);

    // Bad input is refused before anything is stored.
    let (code, _, err) = octollm(
        dir,
        &["keys", "create", "--name", "ci", "--scopes", "tasks:write"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("unknown scope"), "{err}");
    let (code, _, err) = octollm(dir, &["keys", "create", "--name", " ", "--scopes", "admin"]);
    assert_ne!(code, 0);
    assert!(err.contains("--name"), "{err}");

    let (code, key, err) = octollm(
        dir,
        &[
            "keys",
            "create",
            "--name",
            "ci bot",
            "--scopes",
            "tasks:submit,tasks:read",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let key = key.trim().to_owned();
    let id = octollm_core::auth::key_id(&key).expect("a key").to_owned();
    assert!(err.contains(&id) && err.contains("shown once"), "{err}");

    let (code, listed, _) = octollm(dir, &["keys", "list"]);
    assert_eq!(code, 0);
    assert!(
        listed.contains(&id) && listed.contains("active") && listed.contains("ci bot"),
        "{listed}"
    );
    assert!(listed.contains("tasks:submit,tasks:read"), "{listed}");
    assert!(!listed.contains(&key), "list printed the key");

    let port = free_port();
    let server = Server::start_with(dir, port, &[("OCTOLLM_REQUIRE_API_KEYS", "true".into())]);
    let base = server.base.clone();
    // Probes stay open; the API does not.
    assert_eq!(status_with_key(&format!("{base}/health"), None), 200);
    assert_eq!(status_with_key(&format!("{base}/tasks"), None), 401);
    assert_eq!(status_with_key(&format!("{base}/tasks"), Some(&key)), 200);

    let (code, _, err) = octollm(
        dir,
        &[
            "task",
            "--server",
            &base,
            "submit",
            "Write a Python function that adds two numbers",
        ],
    );
    assert_ne!(code, 0, "submitted without a key");
    assert!(err.contains("401"), "{err}");
    let (code, task_id, err) = octollm(
        dir,
        &[
            "task",
            "--server",
            &base,
            "--api-key",
            &key,
            "submit",
            "Write a Python function that adds two numbers",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let task_id = task_id.trim();
    assert!(task_id.starts_with("task_"), "{task_id}");
    // Missing scope: this key cannot cancel.
    let (code, _, err) = octollm(
        dir,
        &[
            "task",
            "--server",
            &base,
            "--api-key",
            &key,
            "cancel",
            task_id,
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("403") && err.contains("tasks:cancel"), "{err}");

    let (code, out, _) = octollm(dir, &["keys", "revoke", &id]);
    assert_eq!(code, 0);
    assert!(out.contains(&id));
    let (code, _, err) = octollm(dir, &["keys", "revoke", &id]);
    assert_ne!(code, 0, "revoked twice");
    assert!(err.contains("no active key"), "{err}");
    assert_eq!(
        status_with_key(&format!("{base}/tasks/{task_id}"), Some(&key)),
        401
    );
    let (_, listed, _) = octollm(dir, &["keys", "list"]);
    assert!(listed.contains("revoked"), "{listed}");

    // The audit log has the key changes and the refusals, for an admin key only.
    let (code, admin, _) = octollm(
        dir,
        &["keys", "create", "--name", "ops", "--scopes", "admin"],
    );
    assert_eq!(code, 0);
    let admin = admin.trim().to_owned();
    let audit = common::runtime().block_on(async {
        reqwest::Client::new()
            .get(format!("{base}/audit?limit=100"))
            .header("x-api-key", &admin)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    });
    let entries = audit["entries"].as_array().unwrap();
    let has = |kind: &str, key: &str| {
        entries
            .iter()
            .any(|e| e["kind"] == kind && e["key_id"] == key)
    };
    assert!(
        has("key_created", &id) && has("key_revoked", &id),
        "{audit}"
    );
    assert!(
        has("scope_denied", &id) && has("auth_failure", &id),
        "{audit}"
    );
    assert!(
        !audit.to_string().contains(&key[18..]),
        "the audit log holds the key"
    );
    drop(server);

    // The key itself is nowhere the server or the store wrote.
    let secret = &key[key.len() - 43..];
    for entry in std::fs::read_dir(dir.join("data"))
        .unwrap()
        .chain(std::fs::read_dir(dir).unwrap())
    {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds the key",
                path.display()
            );
        }
    }
}

/// Keys are required on any non-loopback bind, without being asked; a gateway setting lifts
/// that for requests without a key, not for a bad key.
#[test]
fn a_server_on_every_interface_requires_keys() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_script(dir);
    let port = free_port();
    let server = common::Server::start_on(dir, "0.0.0.0", port, &[]);
    assert_eq!(
        status_with_key(&format!("{}/tasks", server.base), None),
        401
    );
    assert_eq!(
        status_with_key(&format!("{}/ready", server.base), None),
        200
    );
    drop(server);

    let port = free_port();
    let server = common::Server::start_on(
        dir,
        "0.0.0.0",
        port,
        &[("OCTOLLM_ALLOW_UNAUTHENTICATED", "true".into())],
    );
    assert_eq!(
        status_with_key(&format!("{}/tasks", server.base), None),
        200
    );
    assert_eq!(
        status_with_key(&format!("{}/tasks", server.base), Some("octo_not_a_key")),
        401
    );
}
