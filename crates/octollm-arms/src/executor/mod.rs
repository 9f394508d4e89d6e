//! The executor arm: runs one allowlisted program, argv only, inside bubblewrap.
//!
//! Nothing passes through a shell. `command_type: shell` means "run this program with these
//! arguments"; `python` writes the source to `main.py` in a fresh workspace and runs
//! `python3 main.py`. A request is checked against the allowlist and the path, flag, file and
//! environment rules before anything runs ([`policy`]), then runs in a bubblewrap sandbox with
//! no network, a read-only `/usr`, a private `/tmp`, a fresh writable `/workspace`, an empty
//! environment, rlimits, a wall-clock kill and capped output ([`sandbox`]). Without bubblewrap
//! the executor refuses every request: there is no unsandboxed fallback.
//!
//! # Layout
//! - this file: the request, response and config types, and [`LocalExecutor`], which ties
//!   validation and sandbox together.
//! - [`policy`]: the allowlist and the argument, file and environment rules.
//! - [`sandbox`]: the bubblewrap command line, the workspace, rlimits, timeout and output caps.

mod policy;
mod sandbox;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use octollm_core::Usage;
use serde::{Deserialize, Serialize};
use tracing::field::Empty;

use crate::contract::{ArmStatus, Handler, Health};
use crate::{ArmError, ArmOutcome, CallContext, Execute};
use policy::Invocation;
use sandbox::{RunResult, Sandbox};

/// Refusal when no bubblewrap binary is found.
pub const BWRAP_MISSING: &str = "bubblewrap (bwrap) not found: the executor never runs commands \
                                 unsandboxed; install the bubblewrap package";

/// What [`SandboxInfo::sandbox`] reports.
pub const SANDBOX_KIND: &str = "bubblewrap";

/// The largest `timeout_seconds` a request may ask for, whatever the config says.
pub const MAX_TIMEOUT_SECONDS: u64 = 300;

/// `POST /execute`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// `shell`: the program name (`argv[0]`), a bare name on the allowlist.
    /// `python`: the source code, run as `python3 main.py`.
    #[schemars(length(min = 1), pattern(octollm_core::task::NOT_BLANK_PATTERN))]
    pub command: String,
    pub command_type: CommandType,
    /// `argv[1..]` (`shell`) or the script's `sys.argv[1..]` (`python`).
    #[serde(default)]
    #[schemars(length(max = policy::MAX_ARGS))]
    pub args: Vec<String>,
    /// Added to the sandbox's minimal environment (`PATH`, `HOME`, `LANG`); keys
    /// `[A-Z_][A-Z0-9_]*`, and not the reserved ones.
    #[serde(default)]
    #[schemars(length(max = policy::MAX_ENV_VARS))]
    pub env: BTreeMap<String, String>,
    /// 1..=300 and at most the configured maximum; without it, 30 or the maximum if lower.
    #[serde(default, deserialize_with = "octollm_core::wire::whole_opt")]
    #[schemars(range(min = 1, max = MAX_TIMEOUT_SECONDS))]
    pub timeout_seconds: Option<u64>,
    /// Refused unless the executor is configured to grant network access.
    #[serde(default)]
    pub allow_network: bool,
    /// Relative path -> contents, written into the fresh workspace before the command runs.
    #[serde(default)]
    #[schemars(length(max = policy::MAX_FILES))]
    pub files: BTreeMap<String, String>,
}

/// A command's time limit unless the request or the configuration says less.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 30;

impl ExecuteRequest {
    /// Runs `program` with `args`; everything else defaulted.
    pub fn shell(program: impl Into<String>, args: Vec<String>) -> Self {
        Self {
            command: program.into(),
            command_type: CommandType::Shell,
            args,
            env: BTreeMap::new(),
            timeout_seconds: None,
            allow_network: false,
            files: BTreeMap::new(),
        }
    }

    /// The program this request runs: `command` for `shell`, `python3` for `python`.
    pub fn program(&self) -> &str {
        match self.command_type {
            CommandType::Python => policy::PYTHON_PROGRAM,
            _ => &self.command,
        }
    }

    /// What a capability token must grant to run this: its program, and the network if asked.
    pub fn grant(&self) -> octollm_core::token::ExecutorGrant {
        octollm_core::token::ExecutorGrant {
            programs: vec![self.program().to_owned()],
            network: self.allow_network,
        }
    }

    /// Runs `source` as `python3 main.py`; everything else defaulted.
    pub fn python(source: impl Into<String>) -> Self {
        Self {
            command_type: CommandType::Python,
            ..Self::shell(source, Vec::new())
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CommandType {
    /// A program and its arguments. Never interpreted by a shell, despite the name.
    Shell,
    Python,
    /// Not supported yet (refused as invalid; left out of the published schema).
    #[schemars(skip)]
    Http,
    /// Not supported yet (refused as invalid; left out of the published schema).
    #[schemars(skip)]
    Tool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExecuteResponse {
    /// Exited by itself with code 0, within its time, with its whole output captured.
    pub success: bool,
    /// The program's exit code. A program killed by a signal inside the sandbox shows as
    /// 128 + signal (bubblewrap's convention, like a shell's). `-1` when the executor killed
    /// the sandbox (timeout or output cap); see [`SandboxInfo::killed_by_signal`].
    pub exit_code: i32,
    /// Decoded lossily as UTF-8, at most `max_output_bytes`.
    pub stdout: String,
    pub stderr: String,
    pub duration_seconds: f64,
    pub sandbox_info: SandboxInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SandboxInfo {
    /// Always [`SANDBOX_KIND`].
    pub sandbox: String,
    /// Whether the sandbox shared the host's network.
    pub network: bool,
    /// The wall-clock timeout (or the task's time budget) ran out and the sandbox was killed.
    pub timed_out: bool,
    /// Output beyond the cap was dropped and the sandbox was killed.
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// The signal that ended the sandbox, when the executor killed it (9).
    pub killed_by_signal: Option<i32>,
    /// The allowlisted program that ran (`python3` for `command_type: python`).
    pub program: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    /// None: `bwrap` from `PATH`, else `/usr/bin/bwrap`.
    pub bwrap_path: Option<PathBuf>,
    /// Where per-call workspaces are created. None: the system temp dir. When the service
    /// runs as root it must be traversable by uid 65534 (see [`sandbox`]).
    pub workspace_root: Option<PathBuf>,
    pub max_timeout_seconds: u64,
    /// Per stream.
    pub max_output_bytes: usize,
    /// `RLIMIT_AS` of every process in the sandbox.
    pub memory_limit_mb: u64,
    /// `RLIMIT_CPU` of every process in the sandbox.
    pub cpu_time_seconds: u64,
    /// `RLIMIT_NPROC`; counted per host user, so concurrent sandboxes share it.
    pub max_processes: u64,
    /// `RLIMIT_FSIZE`; also the cap on the request's `files` and python source, in total.
    pub max_file_size_mb: u64,
    /// Size of each of the sandbox's two tmpfs, `/tmp` and `/workspace` (memory while used):
    /// all a program can write beyond the request's own files.
    pub scratch_limit_mb: u64,
    /// Whether a request's `allow_network: true` is honoured at all.
    pub allow_network_grants: bool,
    /// The allowlist: bare program name -> its rules.
    pub programs: BTreeMap<String, ProgramPolicy>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProgramPolicy {
    /// Refused in any spelling: `--flag`, `--flag=value`, a getopt abbreviation of it,
    /// and for a short flag `-x` also inside a cluster (`-ax`) or with a value (`-xVALUE`).
    pub forbidden_flags: Vec<String>,
    /// Whether arguments may be absolute paths (inside the sandbox only `/usr`, `/tmp` and
    /// `/workspace` hold anything).
    pub allow_absolute_paths: bool,
}

impl ProgramPolicy {
    fn forbidding(flags: &[&str]) -> Self {
        Self {
            forbidden_flags: flags.iter().map(|f| (*f).to_owned()).collect(),
            ..Self::default()
        }
    }
}

impl Default for ExecutorConfig {
    /// The default allowlist holds text tools and `python3`, nothing that runs another
    /// program by design (no shells, `env`, `find`, `xargs`, `git`, `timeout`, `nice`).
    ///
    /// - `python3` forbids `-c`: inline code goes through `command_type: python`, so there is
    ///   one path for it, logged as such. This is tidiness, not a security boundary: python can
    ///   run anything, which is why it runs in the sandbox. `-m` stays allowed
    ///   (`python3 -m pytest`, `-m py_compile`).
    /// - `sort` forbids `--compress-program`, which runs a program of the caller's choosing.
    /// - `date` forbids `-s`/`--set` (useless without privileges, refused for clarity).
    /// - `grep -r` is allowed: the path rules keep it inside the workspace.
    fn default() -> Self {
        let plain = [
            "echo", "printf", "cat", "ls", "wc", "head", "tail", "grep", "uniq", "tr", "cut",
            "true", "false", "sleep", "seq",
        ];
        let mut programs: BTreeMap<String, ProgramPolicy> = plain
            .iter()
            .map(|p| ((*p).to_owned(), ProgramPolicy::default()))
            .collect();
        programs.insert("python3".into(), ProgramPolicy::forbidding(&["-c"]));
        programs.insert(
            "sort".into(),
            ProgramPolicy::forbidding(&["--compress-program"]),
        );
        programs.insert("date".into(), ProgramPolicy::forbidding(&["-s", "--set"]));
        Self {
            bwrap_path: None,
            workspace_root: None,
            max_timeout_seconds: MAX_TIMEOUT_SECONDS,
            max_output_bytes: 1024 * 1024,
            memory_limit_mb: 512,
            cpu_time_seconds: 60,
            max_processes: 64,
            max_file_size_mb: 64,
            scratch_limit_mb: 256,
            allow_network_grants: false,
            programs,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("executor.{field}: {message}")]
pub struct ExecutorConfigError {
    pub field: String,
    pub message: String,
}

impl ExecutorConfig {
    pub fn validate(&self) -> Result<(), ExecutorConfigError> {
        let err = |field: &str, message: String| {
            Err(ExecutorConfigError {
                field: field.to_owned(),
                message,
            })
        };
        if !(1..=MAX_TIMEOUT_SECONDS).contains(&self.max_timeout_seconds) {
            return err(
                "max_timeout_seconds",
                format!("must be 1 to {MAX_TIMEOUT_SECONDS}"),
            );
        }
        if !(1..=64 * 1024 * 1024).contains(&self.max_output_bytes) {
            return err("max_output_bytes", "must be 1 byte to 64 MiB".into());
        }
        if !(16..=1024 * 1024).contains(&self.memory_limit_mb) {
            return err("memory_limit_mb", "must be 16 to 1048576".into());
        }
        if !(1..=86_400).contains(&self.cpu_time_seconds) {
            return err("cpu_time_seconds", "must be 1 to 86400".into());
        }
        // bubblewrap itself needs a few processes of the sandbox user.
        if !(4..=65_536).contains(&self.max_processes) {
            return err("max_processes", "must be 4 to 65536".into());
        }
        if !(1..=1024 * 1024).contains(&self.max_file_size_mb) {
            return err("max_file_size_mb", "must be 1 to 1048576".into());
        }
        if !(1..=64 * 1024).contains(&self.scratch_limit_mb) {
            return err("scratch_limit_mb", "must be 1 to 65536".into());
        }
        for (name, policy) in &self.programs {
            if !policy::is_bare_program_name(name) {
                return err("programs", format!("`{name}` is not a bare program name"));
            }
            if policy::PROGRAM_RUNNERS.contains(&name.as_str()) {
                return err(
                    "programs",
                    format!("`{name}` runs other programs and cannot be allowlisted"),
                );
            }
            if let Some(flag) = policy
                .forbidden_flags
                .iter()
                .find(|f| f.len() < 2 || !f.starts_with('-'))
            {
                return err(
                    "programs",
                    format!("{name}: forbidden flag `{flag}` is not a flag"),
                );
            }
        }
        Ok(())
    }

    pub(crate) fn max_file_size_bytes(&self) -> u64 {
        self.max_file_size_mb.saturating_mul(1024 * 1024)
    }
}

/// Runs commands on this host, in bubblewrap.
pub struct LocalExecutor {
    config: ExecutorConfig,
    /// The sandbox, or why there is none (bubblewrap missing, config invalid).
    sandbox: Result<Sandbox, String>,
    /// Set once a sandbox has been created successfully on this host.
    probed: tokio::sync::OnceCell<()>,
    /// Why the last probe failed, for [`LocalExecutor::unavailable_reason`].
    probe_failure: Mutex<Option<String>>,
}

impl LocalExecutor {
    /// Never fails: an invalid config or a missing bubblewrap makes the executor refuse every
    /// request and report why in [`LocalExecutor::unavailable_reason`].
    pub fn new(config: ExecutorConfig) -> Self {
        let sandbox = match config.validate() {
            Err(e) => Err(format!("invalid executor configuration: {e}")),
            Ok(()) => match find_bwrap(config.bwrap_path.as_deref()) {
                Some(bwrap) => Ok(Sandbox::new(bwrap, &config)),
                None => Err(BWRAP_MISSING.to_owned()),
            },
        };
        Self {
            config,
            sandbox,
            probed: tokio::sync::OnceCell::new(),
            probe_failure: Mutex::new(None),
        }
    }

    pub fn config(&self) -> &ExecutorConfig {
        &self.config
    }

    /// None when ready; why it cannot run anything otherwise (bubblewrap missing, a sandbox
    /// that cannot be created here, an invalid configuration).
    pub fn unavailable_reason(&self) -> Option<String> {
        match &self.sandbox {
            Err(reason) => Some(reason.clone()),
            Ok(_) => self
                .probe_failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Runs one request (see the module documentation).
    pub async fn execute(
        &self,
        request: ExecuteRequest,
        ctx: CallContext,
    ) -> Result<ArmOutcome<ExecuteResponse>, ArmError> {
        self.run(request, ctx).await
    }

    #[tracing::instrument(
        name = "executor.execute",
        skip_all,
        fields(
            request_id = %ctx.request_id,
            task_id = ctx.task_id.as_ref().map(tracing::field::display),
            command_type = ?request.command_type,
            program = Empty,
            args = request.args.len(),
            env_vars = request.env.len(),
            exit_code = Empty,
            duration_seconds = Empty,
            timed_out = Empty,
            truncated = Empty,
        )
    )]
    async fn run(
        &self,
        request: ExecuteRequest,
        ctx: CallContext,
    ) -> Result<ArmOutcome<ExecuteResponse>, ArmError> {
        let sandbox = self
            .sandbox
            .as_ref()
            .map_err(|reason| ArmError::Refused(reason.clone()))?;
        let now = chrono::Utc::now().timestamp_millis();
        ctx.budget
            .check_time(now)
            .map_err(|e| ArmError::BudgetExceeded(e, Usage::default()))?;

        let invocation = policy::validate(&self.config, request).inspect_err(|e| {
            tracing::info!(error = %e, "execute request refused");
        })?;
        let span = tracing::Span::current();
        span.record("program", invocation.program.as_str());

        self.probe(sandbox).await?;

        // The task's wall-time budget is a hard limit too.
        let budget_left = Duration::from_millis(ctx.budget.time_remaining_ms(now));
        let result = sandbox
            .run(&invocation, invocation.timeout.min(budget_left))
            .await?;
        let response = respond(&invocation, result);

        span.record("exit_code", response.exit_code);
        span.record("duration_seconds", response.duration_seconds);
        span.record("timed_out", response.sandbox_info.timed_out);
        span.record(
            "truncated",
            response.sandbox_info.stdout_truncated || response.sandbox_info.stderr_truncated,
        );
        tracing::info!(success = response.success, "command finished");
        Ok(ArmOutcome::free(response))
    }

    /// Runs `true` in a sandbox once, so a host where bubblewrap cannot create namespaces
    /// (container seccomp, user namespaces disabled, workspace root not reachable) is reported
    /// as such instead of as every command failing with a bubblewrap message.
    /// Only success is remembered; a failed probe is retried on the next request.
    async fn probe(&self, sandbox: &Sandbox) -> Result<(), ArmError> {
        let result = self
            .probed
            .get_or_try_init(|| async {
                let program_path = policy::resolve_program("true").ok_or_else(|| {
                    ArmError::Refused("cannot probe the sandbox: `true` is not installed".into())
                })?;
                let probe = Invocation {
                    program: "true".into(),
                    program_path,
                    args: Vec::new(),
                    env: BTreeMap::new(),
                    files: Vec::new(),
                    timeout: Duration::from_secs(10),
                    network: false,
                };
                let run = sandbox.run(&probe, probe.timeout).await?;
                if run.exit_code == Some(0) {
                    return Ok(());
                }
                Err(ArmError::Refused(format!(
                    "bubblewrap at {} cannot create a sandbox on this host ({}); the executor \
                     never runs commands unsandboxed",
                    sandbox.bwrap().display(),
                    String::from_utf8_lossy(&run.stderr.bytes).trim()
                )))
            })
            .await
            .map(|_| ());
        let mut failure = self.probe_failure.lock().unwrap_or_else(|p| p.into_inner());
        *failure = result.as_ref().err().map(ToString::to_string);
        result
    }
}

#[async_trait::async_trait]
impl Handler<Execute> for LocalExecutor {
    async fn handle(
        &self,
        request: ExecuteRequest,
        ctx: CallContext,
    ) -> Result<ArmOutcome<ExecuteResponse>, ArmError> {
        self.execute(request, ctx).await
    }

    /// Unavailable without a sandbox (bubblewrap missing, or unable to create one here).
    fn status(&self) -> ArmStatus {
        ArmStatus::in_process(
            self.unavailable_reason()
                .map_or(Health::Healthy, Health::Unavailable),
        )
    }
}

fn respond(invocation: &Invocation, run: RunResult) -> ExecuteResponse {
    let truncated = run.stdout.truncated || run.stderr.truncated;
    ExecuteResponse {
        success: run.exit_code == Some(0) && !run.timed_out && !truncated,
        exit_code: run.exit_code.unwrap_or(-1),
        stdout: String::from_utf8_lossy(&run.stdout.bytes).into_owned(),
        stderr: String::from_utf8_lossy(&run.stderr.bytes).into_owned(),
        duration_seconds: run.duration.as_secs_f64(),
        sandbox_info: SandboxInfo {
            sandbox: SANDBOX_KIND.to_owned(),
            network: invocation.network,
            timed_out: run.timed_out,
            stdout_truncated: run.stdout.truncated,
            stderr_truncated: run.stderr.truncated,
            killed_by_signal: run.signal,
            program: invocation.program.clone(),
        },
    }
}

/// The configured path if it is an executable file; else `bwrap` in `PATH`, else
/// `/usr/bin/bwrap`.
fn find_bwrap(configured: Option<&Path>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(path) = configured {
        return executable(path).then(|| path.to_path_buf());
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join("bwrap"))
        .chain(std::iter::once(PathBuf::from("/usr/bin/bwrap")))
        .find(|p| p.is_absolute() && executable(p))
}
