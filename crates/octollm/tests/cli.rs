//! CLI edges: bad input refused before any work, configuration printed with secrets masked,
//! a missing model named with the command that fetches it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

mod common;

use std::process::Command;

fn octollm(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_octollm"));
    command
        .args(args)
        .env("OCTOLLM_DATA_DIR", dir.path())
        .env("HOME", dir.path())
        .env_remove("OCTOLLM_MODEL_DIR");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_masks_secrets() {
    let (code, out, _) = octollm(
        &["check-config"],
        &[
            ("OPENAI_API_KEY", "sk-topsecret-value"),
            ("OCTOLLM_WORKERS", "3"),
        ],
    );
    assert_eq!(code, 0);
    assert!(out.contains("workers = 3"), "{out}");
    assert!(
        !out.contains("sk-topsecret-value") && out.contains("api_key = \"***\""),
        "{out}"
    );
    let (code, _, err) = octollm(&["check-config"], &[("OCTOLLM_LEASE_SECONDS", "1")]);
    assert_eq!(code, 2);
    assert!(err.contains("lease_seconds"), "{err}");
}

#[test]
fn a_short_goal_is_refused_before_loading_anything() {
    let (code, _, err) = octollm(&["run", "too short"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("goal") && err.contains("10 to 2000"), "{err}");
}

#[test]
fn a_missing_model_names_the_command_that_fetches_it() {
    let (code, _, err) = octollm(
        &["run", "Write a Python function that adds two numbers"],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("octollm model pull"), "{err}");
}

/// The reflex and arm services check no API key themselves yet: off loopback they start only
/// when told the network in front authenticates. (The orchestrator requires keys there
/// instead: `tests/api_keys.rs`.)
#[test]
fn reflex_and_arm_services_beyond_loopback_without_auth_are_refused() {
    for args in [
        &["serve", "reflex", "--bind", "0.0.0.0:0"][..],
        &["serve", "arm", "coder", "--bind", "0.0.0.0:0"][..],
    ] {
        let (code, _, err) = octollm(args, &[]);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains("refusing to serve"), "{args:?}: {err}");
    }
    // An arm that verifies capability tokens authenticates its callers itself: it starts.
    let (_, public) = octollm_core::token::generate_keypair();
    let data = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_octollm"))
        .args(["serve", "arm", "judge", "--bind", "0.0.0.0:0"])
        .env("OCTOLLM_TOKEN_PUBLIC_KEYS", &public)
        .env("OCTOLLM_DATA_DIR", data.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(running, "{}", String::from_utf8_lossy(&out.stderr));
}

/// The ADR's manifests name the arm in `ARM_TYPE`: `serve arm` without a name runs that arm,
/// and a name that is no arm is refused with the list.
#[test]
fn serve_arm_takes_its_arm_from_arm_type() {
    let dir = tempfile::tempdir().unwrap();
    let service = common::spawn(
        dir.path(),
        &["serve", "arm"],
        &[("ARM_TYPE", "executor".to_owned())],
    );
    let (status, info) = common::get(&format!("{}/capabilities", service.base)).unwrap();
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["arm_id"], "executor", "{info}");
    let (code, _, err) = octollm(
        &["serve", "arm", "--bind", "127.0.0.1:0"],
        &[("ARM_TYPE", "chef")],
    );
    assert_ne!(code, 0);
    assert!(err.contains("chef") && err.contains("executor"), "{err}");
}
