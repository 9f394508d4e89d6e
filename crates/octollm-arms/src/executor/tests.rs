//! End-to-end tests against the real bubblewrap on this machine.

use std::collections::BTreeMap;
use std::time::Duration;

use octollm_core::{Budget, BudgetTracker, Usage};
use tokio::sync::RwLock;

use super::*;

/// Sandboxes of all tests share the sandbox user's process count (`RLIMIT_NPROC` is per host
/// user), so the test that exhausts it runs alone: it takes this lock for writing, every other
/// sandboxed run for reading.
static PROCESS_COUNT: RwLock<()> = RwLock::const_new(());

fn ctx() -> CallContext {
    let now = chrono::Utc::now().timestamp_millis();
    CallContext::standalone(
        "req-test",
        BudgetTracker::new(&Budget::default(), now, Usage::default()),
    )
}

fn executor() -> LocalExecutor {
    LocalExecutor::new(ExecutorConfig::default())
}

fn shell(program: &str, args: &[&str]) -> ExecuteRequest {
    ExecuteRequest::shell(program, args.iter().map(|a| (*a).to_owned()).collect())
}

async fn try_run(
    exec: &LocalExecutor,
    request: ExecuteRequest,
) -> Result<ExecuteResponse, ArmError> {
    let _shared = PROCESS_COUNT.read().await;
    // A broken kill path shows up as a failure, not as a test run that never ends.
    tokio::time::timeout(Duration::from_secs(30), exec.execute(request, ctx()))
        .await
        .expect("the executor did not return within 30 s")
        .map(|outcome| outcome.response)
}

async fn run(exec: &LocalExecutor, request: ExecuteRequest) -> ExecuteResponse {
    try_run(exec, request).await.unwrap()
}

async fn python(source: &str) -> ExecuteResponse {
    run(&executor(), ExecuteRequest::python(source)).await
}

fn refusal(result: Result<ExecuteResponse, ArmError>) -> String {
    match result {
        Err(ArmError::Refused(message)) => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_program_off_the_allowlist_is_refused() {
    let message = refusal(try_run(&executor(), shell("bash", &["-c", "id"])).await);
    assert!(
        message.contains("`bash` is not on the executor's allowlist"),
        "{message}"
    );
}

#[tokio::test]
async fn a_path_as_program_is_refused() {
    let message = refusal(try_run(&executor(), shell("/usr/bin/echo", &["hi"])).await);
    assert!(message.contains("is a path"), "{message}");
}

#[tokio::test]
async fn shell_metacharacters_are_passed_literally() {
    let args = [
        "$(id)", ";", "ls", "&&", "`id`", "|", ">", "out.txt", "*", "$HOME",
    ];
    let r = run(&executor(), shell("echo", &args)).await;
    assert!(r.success, "{r:?}");
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.stdout, "$(id) ; ls && `id` | > out.txt * $HOME\n");
    assert_eq!(r.sandbox_info.sandbox, "bubblewrap");
    assert_eq!(r.sandbox_info.program, "echo");
    assert!(!r.sandbox_info.network);
}

#[tokio::test]
async fn python_runs_as_an_unprivileged_user_in_the_workspace() {
    let r = python("import os, sys\nprint(6 * 7, os.getuid(), os.getcwd(), sys.argv)").await;
    assert!(r.success, "{r:?}");
    assert_eq!(r.stdout, "42 1000 /workspace ['main.py']\n");
    assert_eq!(r.sandbox_info.program, "python3");
    assert!(r.duration_seconds > 0.0);
}

#[tokio::test]
async fn python_gets_its_args_and_request_env() {
    let mut request =
        ExecuteRequest::python("import os, sys\nprint(sys.argv[1:], os.environ['GREETING'])");
    request.args = vec!["a b".into(), "-c".into()];
    request.env.insert("GREETING".into(), "hello".into());
    let r = run(&executor(), request).await;
    assert_eq!(r.stdout, "['a b', '-c'] hello\n", "{r:?}");
}

#[tokio::test]
async fn python_cannot_reach_the_network() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let source = format!(
        "import socket\n\
         for host, port in [('127.0.0.1', {port}), ('1.1.1.1', 53)]:\n\
         \x20   try:\n\
         \x20       socket.create_connection((host, port), timeout=2)\n\
         \x20       print(host, 'connected')\n\
         \x20   except OSError as e:\n\
         \x20       print(host, 'blocked', type(e).__name__)\n\
         print(sorted(name for _, name in socket.if_nameindex()))\n"
    );
    let r = python(&source).await;
    assert!(r.success, "{r:?}");
    assert!(!r.stdout.contains("connected"), "{}", r.stdout);
    assert!(r.stdout.contains("127.0.0.1 blocked"), "{}", r.stdout);
    assert!(r.stdout.contains("1.1.1.1 blocked"), "{}", r.stdout);
    assert!(r.stdout.ends_with("['lo']\n"), "{}", r.stdout);
    // Nothing reached the host's listener either.
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
}

#[tokio::test]
async fn python_cannot_write_outside_the_workspace_and_sees_little_of_the_host() {
    let marker = format!("octollm-sandbox-test-{}", std::process::id());
    let host_tmp = std::env::temp_dir().join(&marker);
    let source = format!(
        "import os\n\
         for path in ['/usr/x', '/etc/x', '/x', '/bin/x', '/tmp/{marker}', '/workspace/x']:\n\
         \x20   try:\n\
         \x20       open(path, 'w').write('x')\n\
         \x20       print(path, 'written')\n\
         \x20   except OSError as e:\n\
         \x20       print(path, 'refused', type(e).__name__)\n\
         print(sorted(os.listdir('/')))\n\
         print(sorted(os.listdir('/etc')))\n"
    );
    let r = python(&source).await;
    assert!(r.success, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    for refused in ["/usr/x", "/etc/x", "/x", "/bin/x"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{refused} refused"))),
            "{refused}: {}",
            r.stdout
        );
    }
    assert!(
        r.stdout.contains(&format!("/tmp/{marker} written")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("/workspace/x written"), "{}", r.stdout);
    assert!(!host_tmp.exists(), "the sandbox's /tmp leaked to the host");

    let allowed_root = [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "proc",
        "sbin",
        "tmp",
        "usr",
        "workspace",
    ];
    let root = lines[lines.len() - 2];
    for name in root.trim_matches(['[', ']']).split(", ") {
        assert!(
            allowed_root.contains(&name.trim_matches('\'')),
            "unexpected /{name} in {root}"
        );
    }
    let etc = lines[lines.len() - 1];
    for name in etc.trim_matches(['[', ']']).split(", ") {
        assert!(
            ["'alternatives'", "'ld.so.cache'"].contains(&name),
            "unexpected /etc/{name}"
        );
    }
}

#[tokio::test]
async fn the_workspace_lives_for_one_call_only() {
    let root = tempfile::tempdir().unwrap();
    let exec = LocalExecutor::new(ExecutorConfig {
        workspace_root: Some(root.path().to_path_buf()),
        ..ExecutorConfig::default()
    });
    let mut request = ExecuteRequest::python(
        "import subprocess\n\
         text = open('data/in.txt').read()\n\
         open('note.txt', 'w').write(text.upper())\n\
         subprocess.run(['cat', 'note.txt'], check=True)\n",
    );
    request.files.insert("data/in.txt".into(), "hello".into());
    let r = run(&exec, request).await;
    assert!(r.success, "{r:?}");
    assert_eq!(r.stdout, "HELLO");

    let r = run(&exec, shell("cat", &["note.txt"])).await;
    assert!(!r.success);
    assert_ne!(r.exit_code, 0);
    assert!(r.stderr.contains("No such file"), "{r:?}");
    assert_eq!(
        std::fs::read_dir(root.path()).unwrap().count(),
        0,
        "workspaces were not removed"
    );
}

#[tokio::test]
async fn args_with_dotdot_are_refused() {
    let message = refusal(try_run(&executor(), shell("cat", &["../../etc/passwd"])).await);
    assert!(message.contains("`..`"), "{message}");
}

#[tokio::test]
async fn forbidden_flags_are_refused() {
    let message = refusal(try_run(&executor(), shell("python3", &["-c", "print(1)"])).await);
    assert!(
        message.contains("flag `-c` is forbidden for `python3`"),
        "{message}"
    );
    let message =
        refusal(try_run(&executor(), shell("sort", &["--compress-program=sh", "x"])).await);
    assert!(message.contains("--compress-program"), "{message}");
}

#[tokio::test]
async fn the_timeout_kills_the_sandbox() {
    let mut request = shell("sleep", &["30"]);
    request.timeout_seconds = Some(1);
    let r = run(&executor(), request).await;
    assert!(r.sandbox_info.timed_out, "{r:?}");
    assert!(!r.success);
    assert_eq!(r.exit_code, -1);
    assert_eq!(r.sandbox_info.killed_by_signal, Some(9));
    assert!(
        r.duration_seconds >= 1.0 && r.duration_seconds < 5.0,
        "{}",
        r.duration_seconds
    );
}

/// A process that left the session (`setsid`) is outside any process group we could kill;
/// it must die with the sandbox all the same.
#[tokio::test]
async fn the_timeout_kills_detached_grandchildren_too() {
    let marker = format!("47.{}", std::process::id());
    let mut request = ExecuteRequest::python(format!(
        "import subprocess, time\n\
         subprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n\
         subprocess.Popen(['sleep', '{marker}'])\n\
         print('started', flush=True)\n\
         time.sleep(60)\n"
    ));
    request.timeout_seconds = Some(1);
    let r = run(&executor(), request).await;
    assert!(r.sandbox_info.timed_out, "{r:?}");
    assert_eq!(r.stdout, "started\n");

    let survivors = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .filter(|cmdline| cmdline == format!("sleep\0{marker}\0").as_bytes())
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while survivors() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "sandboxed processes outlived the timeout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn endless_output_is_truncated_and_the_program_killed() {
    let exec = LocalExecutor::new(ExecutorConfig {
        max_output_bytes: 64 * 1024,
        ..ExecutorConfig::default()
    });
    let mut request = ExecuteRequest::python("while True:\n    print('x' * 100)\n");
    request.timeout_seconds = Some(20);
    let r = run(&exec, request).await;
    assert!(r.sandbox_info.stdout_truncated, "{:?}", r.sandbox_info);
    assert!(!r.sandbox_info.stderr_truncated);
    assert!(!r.sandbox_info.timed_out);
    assert_eq!(
        r.sandbox_info.killed_by_signal,
        Some(9),
        "killed by us, not by a broken pipe"
    );
    assert_eq!(r.exit_code, -1);
    assert!(!r.success);
    assert_eq!(r.stdout.len(), 64 * 1024);
    assert!(r.duration_seconds < 10.0, "{}", r.duration_seconds);
}

#[tokio::test]
async fn the_service_environment_is_not_visible() {
    // Cargo sets this in the test process; the sandbox must not inherit it (or anything else).
    let host_value = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let mut request = ExecuteRequest::python(
        "import os\n\
         print(sorted(os.environ.items()))\n\
         try:\n\
         \x20   print(open('/proc/1/environ', 'rb').read())\n\
         except OSError as e:\n\
         \x20   print('proc1', type(e).__name__)\n",
    );
    request.env.insert("MY_VAR".into(), "mine".into());
    let r = run(&executor(), request).await;
    assert!(r.success, "{r:?}");
    let first = r.stdout.lines().next().unwrap();
    assert_eq!(
        first,
        "[('HOME', '/workspace'), ('LANG', 'C.UTF-8'), ('MY_VAR', 'mine'), \
         ('PATH', '/usr/bin:/bin'), ('PWD', '/workspace')]"
    );
    assert!(!r.stdout.contains(&host_value), "{}", r.stdout);
    assert!(!r.stdout.contains("CARGO"), "{}", r.stdout);
}

#[tokio::test]
async fn memory_is_limited() {
    let exec = LocalExecutor::new(ExecutorConfig {
        memory_limit_mb: 256,
        ..ExecutorConfig::default()
    });
    let r = run(&exec, ExecuteRequest::python("try:\n    b = bytearray(1024 ** 3)\n    print('allocated')\nexcept MemoryError:\n    print('MemoryError')\n")).await;
    assert_eq!(r.stdout, "MemoryError\n", "{r:?}");
}

#[tokio::test]
async fn processes_are_limited() {
    let _alone = PROCESS_COUNT.write().await;
    let exec = LocalExecutor::new(ExecutorConfig {
        max_processes: 16,
        ..ExecutorConfig::default()
    });
    let source = "import os, time\n\
                  n = 0\n\
                  for _ in range(64):\n\
                  \x20   try:\n\
                  \x20       pid = os.fork()\n\
                  \x20   except OSError:\n\
                  \x20       break\n\
                  \x20   if pid == 0:\n\
                  \x20       time.sleep(2)\n\
                  \x20       os._exit(0)\n\
                  \x20   n += 1\n\
                  print('forked', n)\n";
    let r = exec
        .execute(ExecuteRequest::python(source), ctx())
        .await
        .unwrap()
        .response;
    assert!(r.success, "{r:?}");
    let forked: u32 = r
        .stdout
        .trim()
        .strip_prefix("forked ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(forked < 16, "forked {forked} processes");
}

/// Orphaned zombies owned by `uid`: what a sandbox leaks when bubblewrap's outer process
/// exits without reaping its child.
fn orphaned_zombies(uid: u32) -> usize {
    let field = |status: &str, name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next().map(str::to_owned))
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("status")).ok())
        .filter(|s| {
            field(s, "State:").as_deref() == Some("Z")
                && field(s, "PPid:").as_deref() == Some("1")
                && field(s, "Uid:") == Some(uid.to_string())
        })
        .count()
}

#[tokio::test]
async fn finished_and_killed_sandboxes_leave_no_zombies() {
    let _alone = PROCESS_COUNT.write().await;
    let uid = if rustix::process::geteuid().is_root() {
        65534
    } else {
        rustix::process::geteuid().as_raw()
    };
    let exec = executor();
    for _ in 0..3 {
        let r = exec
            .execute(shell("echo", &["x"]), ctx())
            .await
            .unwrap()
            .response;
        assert!(r.success, "{r:?}");
    }
    let mut request = shell("sleep", &["30"]);
    request.timeout_seconds = Some(1);
    let r = exec.execute(request, ctx()).await.unwrap().response;
    assert!(r.sandbox_info.timed_out);
    // Give a leak the time to show: a zombie appears as soon as its parent has exited.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(orphaned_zombies(uid), 0, "sandboxes left zombies behind");
}

#[tokio::test]
async fn missing_bubblewrap_refuses_everything() {
    let exec = LocalExecutor::new(ExecutorConfig {
        bwrap_path: Some("/nonexistent/bwrap".into()),
        ..ExecutorConfig::default()
    });
    assert_eq!(exec.unavailable_reason().as_deref(), Some(BWRAP_MISSING));
    let message = refusal(try_run(&exec, shell("echo", &["hi"])).await);
    assert_eq!(
        message,
        "bubblewrap (bwrap) not found: the executor never runs commands unsandboxed; \
         install the bubblewrap package"
    );
}

#[tokio::test]
async fn an_available_executor_says_so() {
    let exec = executor();
    assert_eq!(exec.unavailable_reason(), None);
    run(&exec, shell("true", &[])).await;
    assert_eq!(exec.unavailable_reason(), None);
}

#[test]
fn an_invalid_config_makes_the_executor_unavailable() {
    let mut config = ExecutorConfig::default();
    config
        .programs
        .insert("/bin/sh".into(), ProgramPolicy::default());
    assert!(config.validate().is_err());
    let reason = LocalExecutor::new(config).unavailable_reason().unwrap();
    assert!(
        reason.starts_with("invalid executor configuration"),
        "{reason}"
    );
    ExecutorConfig::default().validate().unwrap();
}

#[test]
fn requests_parse_with_defaults_and_reject_unknown_fields() {
    let r: ExecuteRequest =
        serde_json::from_str(r#"{"command": "echo", "command_type": "shell"}"#).unwrap();
    assert_eq!(r, ExecuteRequest::shell("echo", Vec::new()));
    assert_eq!(r.timeout_seconds, None);
    let r: ExecuteRequest = serde_json::from_str(
        r#"{"command": "print(1)", "command_type": "python", "args": ["a"], "env": {"A": "b"},
            "timeout_seconds": 5, "allow_network": false, "files": {"x.txt": "y"}}"#,
    )
    .unwrap();
    assert_eq!(r.command_type, CommandType::Python);
    assert_eq!(
        r.files,
        BTreeMap::from([("x.txt".to_owned(), "y".to_owned())])
    );
    assert!(
        serde_json::from_str::<ExecuteRequest>(
            r#"{"command": "echo", "command_type": "shell", "shell": true}"#
        )
        .is_err()
    );
    assert!(
        serde_json::from_str::<ExecuteRequest>(r#"{"command": "x", "command_type": "Shell"}"#)
            .is_err()
    );
    let config: ExecutorConfig = serde_json::from_str(r#"{"max_processes": 8}"#).unwrap();
    assert_eq!(config.max_processes, 8);
    assert!(config.programs.contains_key("python3"));
    assert!(serde_json::from_str::<ExecutorConfig>(r#"{"unknown": 1}"#).is_err());
}

#[test]
fn the_default_allowlist_holds_no_program_runners() {
    let config = ExecutorConfig::default();
    for runner in [
        "sh", "bash", "dash", "env", "find", "xargs", "git", "timeout", "nice", "nohup", "su",
        "sudo",
    ] {
        assert!(!config.programs.contains_key(runner), "{runner}");
    }
    for program in config.programs.keys() {
        assert!(
            policy::resolve_program(program).is_some(),
            "{program} is not installed here"
        );
    }
}

/// Writing 1 GiB anywhere it can: the program's files stop at the tmpfs size (ENOSPC) or at
/// `RLIMIT_FSIZE` (a request file, on the host), and nothing it wrote outlives the call.
#[tokio::test]
async fn writing_a_gigabyte_stops_at_the_limits() {
    let root = tempfile::tempdir().unwrap();
    let exec = LocalExecutor::new(ExecutorConfig {
        workspace_root: Some(root.path().to_path_buf()),
        scratch_limit_mb: 32,
        max_file_size_mb: 8,
        ..ExecutorConfig::default()
    });
    let source = "import errno, os\n\
                  def fill(prefix):\n\
                  \x20   written = 0\n\
                  \x20   for n in range(64):\n\
                  \x20       try:\n\
                  \x20           with open(f'{prefix}{n}', 'wb') as f:\n\
                  \x20               for _ in range(16):\n\
                  \x20                   f.write(b'x' * 1048576)\n\
                  \x20                   f.flush()\n\
                  \x20                   written += 1\n\
                  \x20       except OSError as e:\n\
                  \x20           if e.errno == errno.ENOSPC:\n\
                  \x20               return written, 'ENOSPC'\n\
                  \x20   return written, 'done'\n\
                  print('workspace', *fill('big'))\n\
                  print('tmp', *fill('/tmp/big'))\n\
                  try:\n\
                  \x20   with open('given.txt', 'ab') as f:\n\
                  \x20       for _ in range(64):\n\
                  \x20           f.write(b'x' * 1048576)\n\
                  \x20           f.flush()\n\
                  \x20   print('given done')\n\
                  except OSError as e:\n\
                  \x20   print('given', errno.errorcode[e.errno])\n";
    let mut request = ExecuteRequest::python(source);
    request.files.insert("given.txt".into(), "seed".into());
    request.timeout_seconds = Some(60);
    let r = run(&exec, request).await;
    let lines: Vec<&str> = r.stdout.lines().collect();
    // Every file stops at 8 MiB (RLIMIT_FSIZE, SIGXFSZ ignored by python: EFBIG), and the
    // whole tmpfs at 32 MiB.
    let written = |line: &str| -> u64 { line.split(' ').nth(1).unwrap().parse().unwrap() };
    assert!(
        lines[0].starts_with("workspace ") && lines[0].ends_with("ENOSPC"),
        "{r:?}"
    );
    assert!(written(lines[0]) <= 32, "{r:?}");
    assert!(
        lines[1].starts_with("tmp ") && lines[1].ends_with("ENOSPC"),
        "{r:?}"
    );
    assert!(written(lines[1]) <= 32, "{r:?}");
    assert!(
        lines[2] == "given EFBIG" || lines[2] == "given EFBIG\n",
        "the request's own file grew past RLIMIT_FSIZE: {r:?}"
    );
    // Nothing is left on the host.
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

/// A symlink the program makes can only point into the sandbox's own file system: the host's
/// files are not there to be reached, and the host never follows it.
#[tokio::test]
async fn symlinks_do_not_lead_out_of_the_sandbox() {
    let root = tempfile::tempdir().unwrap();
    let outside = root.path().join("outside-secret.txt");
    std::fs::write(&outside, "host secret").unwrap();
    let exec = LocalExecutor::new(ExecutorConfig {
        workspace_root: Some(root.path().join("ws")),
        ..ExecutorConfig::default()
    });
    let source = format!(
        "import os\n\
         targets = ['{outside}', '/etc/hostname', '/etc/shadow', '/proc/1/root/etc/shadow', '/proc/1/environ', '../../outside-secret.txt']\n\
         for n, target in enumerate(targets):\n\
         \x20   os.symlink(target, f'link{{n}}')\n\
         \x20   try:\n\
         \x20       data = open(f'link{{n}}', 'rb').read()\n\
         \x20       print(target, 'READ', len(data), b'host secret' in data)\n\
         \x20   except OSError as e:\n\
         \x20       print(target, type(e).__name__)\n",
        outside = outside.display()
    );
    let r = run(&exec, ExecuteRequest::python(&source)).await;
    assert!(r.success, "{r:?}");
    assert!(
        !r.stdout.contains("True"),
        "a host file was read: {}",
        r.stdout
    );
    for line in r.stdout.lines() {
        // /proc/1/environ is the sandbox's own PID 1 (the program), with the scrubbed env.
        if line.starts_with("/proc/1/environ") {
            continue;
        }
        assert!(!line.contains("READ"), "{line}");
    }
    // `cat` on a link made earlier in the same sandbox: the path rules pass (`link0` is a plain
    // relative name), and the target is not in the sandbox.
    let mut request = ExecuteRequest::python(format!(
        "import os, subprocess\n\
         os.symlink('{}', 'link')\n\
         print(subprocess.run(['cat', 'link'], capture_output=True).returncode)\n",
        outside.display()
    ));
    request.timeout_seconds = Some(10);
    let r = run(&exec, request).await;
    assert_eq!(r.stdout.trim(), "1", "{r:?}");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "host secret");
}

/// The escape attempts of issue 6 that go through an allowlisted program: `find -exec`,
/// `git -c core.pager=...`, `env`. Programs that exist to run others cannot be allowlisted at
/// all; programs that can through a flag, an environment variable or a config file keep
/// those refused even when an operator allowlists them.
#[tokio::test]
async fn programs_cannot_run_programs_off_the_allowlist() {
    for runner in ["env", "xargs", "sh", "nice", "timeout", "busybox"] {
        let mut config = ExecutorConfig::default();
        config
            .programs
            .insert(runner.into(), ProgramPolicy::default());
        let error = config.validate().unwrap_err();
        assert!(
            error.message.contains("runs other programs"),
            "{runner}: {error}"
        );
        let exec = LocalExecutor::new(config);
        let message = refusal(try_run(&exec, shell(runner, &["id"])).await);
        assert!(
            message.contains("runs other programs"),
            "{runner}: {message}"
        );
    }

    let mut config = ExecutorConfig::default();
    for name in ["find", "git", "tar"] {
        config
            .programs
            .insert(name.into(), ProgramPolicy::default());
    }
    let exec = LocalExecutor::new(config);
    for (program, args) in [
        ("find", &[".", "-exec", "sh", "-c", "id", ";"][..]),
        ("find", &[".", "-execdir", "id", ";"][..]),
        ("find", &[".", "-ok", "id", ";"][..]),
        ("find", &[".", "-okdir", "id", ";"][..]),
        ("find", &[".", "-fprint", "out"][..]),
        ("git", &["-c", "core.pager=sh -c id", "log"][..]),
        ("git", &["--config-env=core.pager=X", "log"][..]),
        ("git", &["--exec-path=bin", "log"][..]),
        ("git", &["-c", "alias.x=!id", "x"][..]),
        ("git", &["ls-remote", "--upload-pack=id", "."][..]),
        ("tar", &["-cf", "x.tar", "--to-command=id", "."][..]),
        ("tar", &["-I", "id", "-cf", "x.tar", "."][..]),
    ] {
        let message = refusal(try_run(&exec, shell(program, args)).await);
        assert!(
            message.contains("is forbidden for"),
            "{program} {args:?}: {message}"
        );
    }
    // The same programs without those flags still run.
    let r = run(&exec, shell("find", &[".", "-name", "*.py"])).await;
    assert!(r.success, "{r:?}");

    // Through the environment or a config file in the workspace (HOME is the workspace).
    for (key, value) in [
        ("GIT_PAGER", "id"),
        ("GIT_SSH_COMMAND", "id"),
        ("PAGER", "id"),
        ("EDITOR", "id"),
    ] {
        let mut request = shell("git", &["log"]);
        request.env.insert(key.into(), value.into());
        let message = refusal(try_run(&exec, request).await);
        assert!(message.contains(key), "{key}: {message}");
    }
    for path in [".gitconfig", ".git/config", "repo/.git/hooks/pre-commit"] {
        let mut request = shell("git", &["status"]);
        request
            .files
            .insert(path.into(), "[core]\n\tpager = id\n".into());
        let message = refusal(try_run(&exec, request).await);
        assert!(message.contains("configure git"), "{path}: {message}");
    }
}

/// Our seccomp filter is loaded: the calls it denies fail with EPERM inside the sandbox,
/// while threads, subprocesses and files work.
#[cfg(target_arch = "x86_64")]
#[tokio::test]
async fn the_seccomp_filter_refuses_what_a_program_has_no_business_calling() {
    let source = "import ctypes, errno, os, subprocess, threading\n\
                  libc = ctypes.CDLL(None, use_errno=True)\n\
                  def call(name, nr, *args):\n\
                  \x20   r = libc.syscall(nr, *args)\n\
                  \x20   print(name, 'ok' if r >= 0 else errno.errorcode[ctypes.get_errno()])\n\
                  call('ptrace', 101, 0, 0, 0, 0)\n\
                  call('unshare', 272, 0x20000)\n\
                  call('io_uring_setup', 425, 1, 0)\n\
                  call('bpf', 321, 0, 0, 0)\n\
                  call('keyctl', 250, 0, 0, 0)\n\
                  call('x32_getpid', 0x40000000 + 39)\n\
                  call('getpid', 39)\n\
                  t = threading.Thread(target=lambda: None); t.start(); t.join()\n\
                  print('thread ok')\n\
                  print('subprocess', subprocess.run(['true']).returncode)\n\
                  print([l for l in open('/proc/self/status') if l.startswith('Seccomp:')][0].split()[1])\n";
    let r = run(&executor(), ExecuteRequest::python(source)).await;
    assert!(r.success, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "ptrace EPERM",
            "unshare EPERM",
            "io_uring_setup EPERM",
            "bpf EPERM",
            "keyctl EPERM",
            "x32_getpid EPERM",
            "getpid ok",
            "thread ok",
            "subprocess 0",
            "2",
        ],
        "{r:?}"
    );
}
