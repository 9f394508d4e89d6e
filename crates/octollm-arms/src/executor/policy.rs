//! Validation at the edge: an [`ExecuteRequest`] becomes an [`Invocation`] only if the
//! allowlist and the argument, file and environment rules accept it. The sandbox never
//! re-validates; it runs exactly what this module produced.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::{CommandType, ExecuteRequest, ExecutorConfig, ProgramPolicy};
use crate::ArmError;

/// Where allowlisted programs are looked up, outside the sandbox. Both are visible
/// read-only inside it at the same paths.
pub(crate) const SYSTEM_BIN_DIRS: [&str; 2] = ["/usr/bin", "/bin"];

/// The program `command_type: python` runs; it must be on the allowlist.
pub(crate) const PYTHON_PROGRAM: &str = octollm_core::token::PYTHON_PROGRAM;
/// The file the source of a `python` request is written to, relative to the workspace.
pub(crate) const PYTHON_MAIN: &str = "main.py";

/// Environment variables a request may not set: the sandbox sets them itself, or they
/// change how the dynamic loader, libc or the interpreter find code. Any `LD_*` is refused too.
const RESERVED_ENV: [&str; 9] = [
    "PATH",
    "HOME",
    "IFS",
    "BASH_ENV",
    "ENV",
    "GLIBC_TUNABLES",
    "GCONV_PATH",
    "LOCPATH",
    "PYTHONHOME",
];

/// Environment variables that make an allowlisted program run another one (a pager, an
/// editor, git's hooks and helpers); any `GIT_*` is refused too.
const RUNNER_ENV: [&str; 6] = ["PAGER", "EDITOR", "VISUAL", "SHELL", "MANPAGER", "BROWSER"];

/// Programs whose purpose is to run another program. None may be allowlisted (a
/// configuration naming one is refused), so nothing off the allowlist runs through them.
pub(crate) const PROGRAM_RUNNERS: [&str; 30] = [
    "env", "xargs", "nice", "nohup", "timeout", "stdbuf", "setsid", "chroot", "sh", "bash", "dash",
    "zsh", "ksh", "csh", "fish", "busybox", "su", "sudo", "doas", "runuser", "flock", "watch",
    "unshare", "nsenter", "ionice", "taskset", "chrt", "strace", "ltrace", "parallel",
];

/// Flags that make an ordinary program run another one. Refused for that program whatever
/// the configuration says, on top of its configured `forbidden_flags`.
const RUNNER_FLAGS: [(&str, &[&str]); 6] = [
    (
        "find",
        &[
            "-exec", "-execdir", "-ok", "-okdir", "-fprint", "-fprint0", "-fprintf", "-fls",
        ],
    ),
    (
        "git",
        &[
            "-c",
            "--config-env",
            "--exec-path",
            "--upload-pack",
            "--receive-pack",
            "-u",
        ],
    ),
    (
        "tar",
        &[
            "--to-command",
            "--use-compress-program",
            "-I",
            "--checkpoint-action",
            "--info-script",
            "-F",
            "--new-volume-script",
            "--rsh-command",
        ],
    ),
    ("rsync", &["-e", "--rsh", "--rsync-path"]),
    ("sort", &["--compress-program"]),
    ("zip", &["-T", "--test", "-TT", "--unzip-command"]),
];

/// Files a request may not write when they would configure a program to run others (git
/// reads `$HOME/.gitconfig`, and `HOME` is the workspace).
fn configures_a_runner(path: &Path) -> bool {
    path.components().any(|c| c.as_os_str() == ".git")
        || path.file_name().is_some_and(|n| n == ".gitconfig")
}

pub(crate) const MAX_ARGS: usize = 1024;
pub(crate) const MAX_ENV_VARS: usize = 128;
pub(crate) const MAX_FILES: usize = 256;
/// Program name, arguments and environment together; far below the kernel's `ARG_MAX`.
const MAX_ARGV_ENV_BYTES: usize = 256 * 1024;
const MAX_PATH_BYTES: usize = 1024;

/// A request that passed every rule: what the sandbox runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Invocation {
    /// The allowlist name, for logs and [`super::SandboxInfo::program`].
    pub program: String,
    /// Absolute path outside the sandbox, under one of [`SYSTEM_BIN_DIRS`].
    pub program_path: PathBuf,
    /// `argv[1..]`.
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Relative paths (already checked) and contents, written into the workspace first.
    pub files: Vec<(PathBuf, String)>,
    pub timeout: Duration,
    pub network: bool,
}

/// Checks `request` against `config` and the host's programs.
pub(crate) fn validate(
    config: &ExecutorConfig,
    request: ExecuteRequest,
) -> Result<Invocation, ArmError> {
    validate_with(config, request, resolve_program)
}

/// [`validate`] with the program lookup injected, so the rules are testable without a host.
pub(crate) fn validate_with(
    config: &ExecutorConfig,
    request: ExecuteRequest,
    resolve: impl Fn(&str) -> Option<PathBuf>,
) -> Result<Invocation, ArmError> {
    let ExecuteRequest {
        command,
        command_type,
        args,
        env,
        timeout_seconds,
        allow_network,
        files,
    } = request;

    let max = config.max_timeout_seconds;
    let timeout_seconds = timeout_seconds.unwrap_or(super::DEFAULT_TIMEOUT_SECONDS.min(max));
    if timeout_seconds == 0 || timeout_seconds > max {
        return Err(invalid(format!(
            "timeout_seconds must be 1 to {max}, got {timeout_seconds}"
        )));
    }
    if allow_network && !config.allow_network_grants {
        return Err(ArmError::Refused(
            "network access was requested but this executor grants none \
             (allow_network_grants is off)"
                .into(),
        ));
    }
    if args.len() > MAX_ARGS {
        return Err(invalid(format!(
            "at most {MAX_ARGS} args, got {}",
            args.len()
        )));
    }

    let (program, mut file_list, mut argv) = match command_type {
        CommandType::Shell => (command, Vec::new(), Vec::new()),
        CommandType::Python => {
            if octollm_core::task::is_blank(&command) {
                return Err(invalid(
                    "command_type python needs the source code in `command`",
                ));
            }
            if !config.programs.contains_key(PYTHON_PROGRAM) {
                return Err(ArmError::Refused(format!(
                    "command_type python needs `{PYTHON_PROGRAM}` on the executor's allowlist"
                )));
            }
            if files.contains_key(PYTHON_MAIN) {
                return Err(refuse(format!(
                    "files may not contain `{PYTHON_MAIN}` with command_type python: \
                     the source in `command` is written there"
                )));
            }
            let file_limit = config.max_file_size_bytes();
            if command.len() as u64 > file_limit {
                return Err(refuse(format!("python source is over {file_limit} bytes")));
            }
            let main = vec![(PathBuf::from(PYTHON_MAIN), command)];
            (
                PYTHON_PROGRAM.to_owned(),
                main,
                vec![PYTHON_MAIN.to_owned()],
            )
        }
        CommandType::Http | CommandType::Tool => {
            let kind = if command_type == CommandType::Http {
                "http"
            } else {
                "tool"
            };
            return Err(invalid(format!(
                "command_type {kind} is not supported by the executor yet; \
                 use shell (a program and its args) or python"
            )));
        }
    };

    let policy = check_program(config, &program)?;
    let program_path = resolve(&program).ok_or_else(|| {
        ArmError::Refused(format!(
            "program `{program}` is allowlisted but not installed under {}",
            SYSTEM_BIN_DIRS.join(" or ")
        ))
    })?;

    for arg in &args {
        check_arg(arg, policy)?;
        // Arguments after the script belong to the script, not to the interpreter.
        if command_type == CommandType::Shell {
            check_flags(&program, arg, policy)?;
        }
    }
    let mut argv_bytes = program.len() + args.iter().map(String::len).sum::<usize>();

    if env.len() > MAX_ENV_VARS {
        return Err(invalid(format!(
            "at most {MAX_ENV_VARS} env variables, got {}",
            env.len()
        )));
    }
    for (key, value) in &env {
        check_env(key, value)?;
        argv_bytes += key.len() + value.len();
    }
    if argv_bytes > MAX_ARGV_ENV_BYTES {
        return Err(refuse(format!(
            "args and env together are over {MAX_ARGV_ENV_BYTES} bytes ({argv_bytes})"
        )));
    }

    if files.len() > MAX_FILES {
        return Err(invalid(format!(
            "at most {MAX_FILES} files, got {}",
            files.len()
        )));
    }
    let file_limit = config.max_file_size_bytes();
    let mut total = file_list.iter().map(|(_, c)| c.len() as u64).sum::<u64>();
    for (key, contents) in files {
        let path = check_file_path(&key)?;
        total += contents.len() as u64;
        if total > file_limit {
            return Err(refuse(format!(
                "files are over {file_limit} bytes in total"
            )));
        }
        file_list.push((path, contents));
    }

    argv.extend(args);
    Ok(Invocation {
        program,
        program_path,
        args: argv,
        env,
        files: file_list,
        timeout: Duration::from_secs(timeout_seconds),
        network: allow_network,
    })
}

/// The first existing, executable regular file named `name` in [`SYSTEM_BIN_DIRS`].
pub(crate) fn resolve_program(name: &str) -> Option<PathBuf> {
    SYSTEM_BIN_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| {
            std::fs::metadata(path)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A bare program name: what the allowlist is keyed by and what `command` must be.
pub(crate) fn is_bare_program_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
        && name.len() <= 64
}

fn check_program<'c>(
    config: &'c ExecutorConfig,
    program: &str,
) -> Result<&'c ProgramPolicy, ArmError> {
    if program.is_empty() {
        return Err(invalid("command (the program to run) is empty"));
    }
    if program.contains('/') {
        return Err(ArmError::Refused(format!(
            "program `{}` is a path: give a bare program name from the allowlist \
             (it is resolved under /usr/bin or /bin)",
            shorten(program)
        )));
    }
    if !is_bare_program_name(program) {
        return Err(refuse(format!(
            "program `{}` is not a program name (letters, digits, `._+-`)",
            shorten(program)
        )));
    }
    config.programs.get(program).ok_or_else(|| {
        ArmError::Refused(format!(
            "program `{program}` is not on the executor's allowlist"
        ))
    })
}

/// Path rules for one argument: no `..` component anywhere, no absolute path unless the
/// program's policy allows it. Option values (`--out=/x`, `-o/x`) count as paths too.
fn check_arg(arg: &str, policy: &ProgramPolicy) -> Result<(), ArmError> {
    if arg.contains('\0') {
        return Err(refuse("an argument contains a NUL byte"));
    }
    let candidates = path_candidates(arg);
    if candidates
        .iter()
        .any(|c| c.split(['/', '=']).any(|part| part == ".."))
    {
        return Err(ArmError::Refused(format!(
            "argument `{}` has a `..` path component; paths must stay inside the workspace",
            shorten(arg)
        )));
    }
    if !policy.allow_absolute_paths && candidates.iter().any(|c| c.starts_with('/')) {
        return Err(ArmError::Refused(format!(
            "argument `{}` is an absolute path; use paths relative to the workspace",
            shorten(arg)
        )));
    }
    Ok(())
}

/// The strings inside `arg` that a program may treat as a path: the argument itself, the
/// value after a `=` (`--out=x`, `if=x`) and the value attached to a short option (`-ox`).
fn path_candidates(arg: &str) -> Vec<&str> {
    let mut out = vec![arg];
    if let Some((_, value)) = arg.split_once('=') {
        out.push(value);
    }
    if arg.starts_with('-')
        && !arg.starts_with("--")
        && let Some(rest) = arg.get(2..)
    {
        out.push(rest);
    }
    out
}

fn check_flags(program: &str, arg: &str, policy: &ProgramPolicy) -> Result<(), ArmError> {
    let built_in = RUNNER_FLAGS
        .iter()
        .filter(|(name, _)| *name == program)
        .flat_map(|(_, flags)| flags.iter().copied());
    match policy
        .forbidden_flags
        .iter()
        .map(String::as_str)
        .chain(built_in)
        .find(|flag| flag_matches(arg, flag))
    {
        Some(flag) => Err(ArmError::Refused(format!(
            "flag `{flag}` is forbidden for `{program}` (argument `{}`)",
            shorten(arg)
        ))),
        None => Ok(()),
    }
}

/// Whether `arg` uses the forbidden `flag`. Deliberately broad, since refusing too much is
/// safe: a long flag also matches `--flag=value` and any abbreviation getopt would accept
/// (`--compress` for `--compress-program`); a short flag also matches inside a cluster of
/// short options (`-Bc` for `-c`) and with an attached value (`-cCODE`).
pub(crate) fn flag_matches(arg: &str, flag: &str) -> bool {
    if arg == flag {
        return true;
    }
    if let Some(long) = flag.strip_prefix("--") {
        let Some(name) = arg.split('=').next().and_then(|n| n.strip_prefix("--")) else {
            return false;
        };
        return !name.is_empty() && long.starts_with(name);
    }
    match (flag.strip_prefix('-'), arg.strip_prefix('-')) {
        (Some(short), Some(cluster)) if short.chars().count() == 1 && !cluster.starts_with('-') => {
            cluster.contains(short)
        }
        _ => false,
    }
}

fn check_env(key: &str, value: &str) -> Result<(), ArmError> {
    let mut chars = key.chars();
    let well_formed = chars
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if !well_formed {
        return Err(refuse(format!(
            "env key `{}` must match [A-Z_][A-Z0-9_]*",
            shorten(key)
        )));
    }
    if key.starts_with("LD_")
        || key.starts_with("GIT_")
        || RESERVED_ENV.contains(&key)
        || RUNNER_ENV.contains(&key)
    {
        return Err(ArmError::Refused(format!(
            "env variable {key} may not be set by a request"
        )));
    }
    if value.contains('\0') {
        return Err(refuse(format!("env variable {key} contains a NUL byte")));
    }
    Ok(())
}

/// A `files` key: relative, no `..`, no NUL, at least one normal component.
fn check_file_path(key: &str) -> Result<PathBuf, ArmError> {
    if key.contains('\0') || key.len() > MAX_PATH_BYTES {
        return Err(refuse(format!(
            "file path `{}` is malformed or too long",
            shorten(key)
        )));
    }
    let mut clean = PathBuf::new();
    for component in Path::new(key).components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(ArmError::Refused(format!(
                    "file path `{}` has a `..` component",
                    shorten(key)
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(ArmError::Refused(format!(
                    "file path `{}` is absolute; files are written relative to the workspace",
                    shorten(key)
                )));
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(refuse(format!(
            "file path `{}` names no file",
            shorten(key)
        )));
    }
    if configures_a_runner(&clean) {
        return Err(ArmError::Refused(format!(
            "file path `{}` would configure git to run programs",
            shorten(key)
        )));
    }
    Ok(clean)
}

/// The request breaks the published schema (400).
fn invalid(message: impl Into<String>) -> ArmError {
    ArmError::InvalidRequest(message.into())
}

/// A well-formed request the executor's policy will not run (403).
fn refuse(message: impl Into<String>) -> ArmError {
    ArmError::Refused(message.into())
}

/// Keeps refusal messages readable when a request carries a huge argument.
fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fake_resolve(name: &str) -> Option<PathBuf> {
        Some(Path::new("/usr/bin").join(name))
    }

    fn shell(program: &str, args: &[&str]) -> ExecuteRequest {
        ExecuteRequest::shell(program, args.iter().map(|a| (*a).to_owned()).collect())
    }

    fn check(request: ExecuteRequest) -> Result<Invocation, ArmError> {
        validate_with(&ExecutorConfig::default(), request, fake_resolve)
    }

    fn refused(result: Result<Invocation, ArmError>) -> String {
        match result {
            Err(ArmError::Refused(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn invalid_msg(result: Result<Invocation, ArmError>) -> String {
        match result {
            Err(ArmError::InvalidRequest(m)) => m,
            other => panic!("expected an invalid request, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_allowlisted_command_passes() {
        let inv = check(shell("echo", &["hello", "-n", "a/b.txt"])).unwrap();
        assert_eq!(inv.program, "echo");
        assert_eq!(inv.program_path, PathBuf::from("/usr/bin/echo"));
        assert_eq!(inv.args, ["hello", "-n", "a/b.txt"]);
        assert_eq!(inv.timeout, Duration::from_secs(30));
        assert!(!inv.network);
    }

    #[test]
    fn programs_off_the_allowlist_or_given_as_paths_are_refused() {
        assert!(
            refused(check(shell("bash", &["-c", "id"])))
                .contains("not on the executor's allowlist")
        );
        assert!(refused(check(shell("/usr/bin/echo", &["x"]))).contains("is a path"));
        assert!(refused(check(shell("./echo", &[]))).contains("is a path"));
        invalid_msg(check(shell("", &[])));
        refused(check(shell("echo hi", &[])));
        for runner in [
            "sh", "bash", "env", "find", "xargs", "git", "timeout", "nice", "nohup",
        ] {
            refused(check(shell(runner, &[])));
        }
    }

    #[test]
    fn an_allowlisted_program_missing_on_the_host_is_refused() {
        let r = validate_with(&ExecutorConfig::default(), shell("echo", &[]), |_| None);
        assert!(refused(r).contains("not installed"));
    }

    #[test]
    fn dotdot_components_are_refused_wherever_they_hide() {
        for arg in ["..", "../x", "a/../../b", "a/..", "--file=../x", "-o../x"] {
            assert!(refused(check(shell("cat", &[arg]))).contains(".."), "{arg}");
        }
        // Dots that are not a `..` component are fine.
        check(shell("echo", &["...", "a..b", "x/.../y", ".hidden"])).unwrap();
    }

    #[test]
    fn absolute_paths_need_the_policy_to_allow_them() {
        for arg in ["/etc/passwd", "--file=/etc/passwd", "-f/etc/passwd"] {
            assert!(
                refused(check(shell("cat", &[arg]))).contains("absolute"),
                "{arg}"
            );
        }
        let mut config = ExecutorConfig::default();
        config.programs.insert(
            "cat".into(),
            ProgramPolicy {
                allow_absolute_paths: true,
                ..Default::default()
            },
        );
        validate_with(
            &config,
            shell("cat", &["/usr/share/dict/words"]),
            fake_resolve,
        )
        .unwrap();
    }

    #[test]
    fn forbidden_flags_are_refused_in_every_spelling() {
        for arg in [
            "--compress-program=gzip",
            "--compress-program",
            "--compress=gzip",
            "--comp",
        ] {
            assert!(
                refused(check(shell("sort", &[arg]))).contains("--compress-program"),
                "{arg}"
            );
        }
        for arg in ["-c", "-cprint(1)", "-Bc", "-Ic"] {
            assert!(
                refused(check(shell("python3", &[arg, "x"]))).contains("`-c`"),
                "{arg}"
            );
        }
        check(shell("sort", &["-r", "--reverse", "data.txt"])).unwrap();
        check(shell("python3", &["-m", "py_compile", "main.py"])).unwrap();
    }

    #[test]
    fn python_puts_the_source_in_main_py_and_script_args_skip_flag_rules() {
        let mut req = ExecuteRequest::python("print(1)");
        req.args = vec!["-c".into()];
        let inv = check(req).unwrap();
        assert_eq!(inv.program, "python3");
        assert_eq!(inv.args, ["main.py", "-c"]);
        assert_eq!(
            inv.files,
            vec![(PathBuf::from("main.py"), "print(1)".to_owned())]
        );

        let mut req = ExecuteRequest::python("print(1)");
        req.files.insert("main.py".into(), "x".into());
        refused(check(req));
        invalid_msg(check(ExecuteRequest::python("  ")));

        let mut config = ExecutorConfig::default();
        config.programs.remove("python3");
        let r = validate_with(&config, ExecuteRequest::python("print(1)"), fake_resolve);
        assert!(refused(r).contains("python3"));
    }

    #[test]
    fn http_and_tool_are_not_supported_yet() {
        for kind in [CommandType::Http, CommandType::Tool] {
            let mut req = shell("echo", &[]);
            req.command_type = kind;
            assert!(invalid_msg(check(req)).contains("not supported by the executor yet"));
        }
    }

    #[test]
    fn env_keys_are_checked() {
        for key in ["lower", "1ABC", "A-B", "", "A B"] {
            let mut req = shell("echo", &[]);
            req.env.insert(key.into(), "v".into());
            refused(check(req));
        }
        for key in [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "LD_AUDIT",
            "PATH",
            "HOME",
            "GLIBC_TUNABLES",
        ] {
            let mut req = shell("echo", &[]);
            req.env.insert(key.into(), "v".into());
            assert!(refused(check(req)).contains(key));
        }
        let mut req = shell("echo", &[]);
        req.env.insert("MY_VAR_2".into(), "v".into());
        req.env.insert("_X".into(), "v".into());
        check(req).unwrap();
    }

    #[test]
    fn file_paths_must_stay_in_the_workspace() {
        for key in ["/etc/x", "../x", "a/../../x"] {
            let mut req = shell("echo", &[]);
            req.files.insert(key.into(), "x".into());
            refused(check(req));
        }
        for key in ["", ".", "./"] {
            let mut req = shell("echo", &[]);
            req.files.insert(key.into(), "x".into());
            refused(check(req));
        }
        let mut req = shell("cat", &["src/a.txt"]);
        req.files.insert("./src/a.txt".into(), "x".into());
        let inv = check(req).unwrap();
        assert_eq!(
            inv.files,
            vec![(PathBuf::from("src/a.txt"), "x".to_owned())]
        );
    }

    #[test]
    fn timeout_and_network_limits() {
        for t in [0, 301] {
            let mut req = shell("echo", &[]);
            req.timeout_seconds = Some(t);
            invalid_msg(check(req));
        }
        let mut req = shell("echo", &[]);
        req.timeout_seconds = Some(300);
        check(req).unwrap();

        let mut req = shell("echo", &[]);
        req.allow_network = true;
        assert!(refused(check(req.clone())).contains("network"));
        let config = ExecutorConfig {
            allow_network_grants: true,
            ..Default::default()
        };
        assert!(validate_with(&config, req, fake_resolve).unwrap().network);
    }

    proptest! {
        /// Whatever the argument, an accepted one has no `..` component and is not absolute.
        #[test]
        fn accepted_args_never_escape(arg in "[-a-z./=]{0,12}") {
            if let Ok(inv) = check(shell("cat", &[&arg])) {
                let a = &inv.args[0];
                prop_assert!(!a.starts_with('/'));
                prop_assert!(!a.split(['/', '=']).any(|p| p == ".."));
            }
        }

        /// A forbidden long flag is refused with any value attached.
        #[test]
        fn long_flag_with_any_value_is_refused(value in "[^\\x00]{0,20}") {
            let arg = format!("--compress-program={value}");
            prop_assert!(matches!(check(shell("sort", &[&arg])), Err(ArmError::Refused(_))));
        }
    }
}
