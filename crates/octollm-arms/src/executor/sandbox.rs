//! Running one [`Invocation`] inside bubblewrap.
//!
//! The sandbox sees: `/usr` read-only (and `/bin`, `/lib`, ... as the host has them: symlinks
//! on merged-usr Debian, else read-only binds), `/etc/ld.so.cache` and `/etc/alternatives`
//! read-only, a fresh `/proc` of its own PID namespace, a minimal `/dev`, and two private
//! tmpfs of `scratch_limit_mb` each: `/tmp` and `/workspace`. The request's files are written
//! to a fresh per-call directory on the host and bound one by one, read-write, into
//! `/workspace`; everything the program creates lives in the tmpfs, so it can neither fill the
//! host's disk nor (the size being fixed) its memory beyond the two limits, and writes to the
//! bound files stop at `RLIMIT_FSIZE` each. Nothing else of
//! the host: no `/etc` beyond those two entries (plus the resolver and CA files when network is
//! granted), no `/root`, `/home`, `/var`, `/sys` or host `/proc`. After the mounts the root
//! itself is remounted read-only. All namespaces are unshared (network too, unless granted),
//! the program runs as uid/gid 1000 with no capabilities, in a new session, cannot create
//! nested user namespaces, and sees only `PATH`, `HOME`, `LANG` and the request's own env.
//!
//! When the service runs as root, bubblewrap itself is started as uid/gid 65534 (`nobody`):
//! the kernel exempts root from `RLIMIT_NPROC`, so a sandbox mapped onto host root could fork
//! without bound; mapped onto `nobody` the limit holds, and a process that escaped the
//! namespaces would be `nobody` on the host rather than root. The workspace is chowned to
//! that user. The process limit is counted per host user, so concurrent sandboxes share it.
//!
//! rlimits (CPU, address space, file size, processes, open files, no core dumps) are set in
//! the forked child before bubblewrap is executed and are inherited by everything inside.
//!
//! System calls: on x86_64 bubblewrap loads our seccomp filter ([`seccomp_program`], passed
//! on an inherited memfd with `--seccomp`) before it executes the program: the calls a
//! sandboxed program has no business making (tracing other processes, mounting, loading
//! kernel modules or BPF, keyrings, io_uring, new namespaces, setting the clock, ...) fail with
//! `EPERM`, as does every call through the 32-bit or x32 ABIs. Elsewhere there is none of ours
//! (the container runtime's default profile still applies).
//!
//! Processes: the outer bubblewrap (our child) clones the program, which runs as PID 1 of the
//! sandbox's PID namespace (`--as-pid-1`). Without `--as-pid-1` bubblewrap puts a tiny init in
//! between, and the outer bubblewrap exits without reaping it: every run would leave a zombie
//! on the host's init, counting against the sandbox user's `RLIMIT_NPROC` (for good, under a
//! container PID 1 that does not reap). With it, the outer bubblewrap reaps the program.
//!
//! Killing: on the wall-clock timeout or when an output stream exceeds its cap, the program
//! (PID 1 of the sandbox) gets SIGKILL through a pidfd. When PID 1 of a namespace dies the
//! kernel kills every other process in it, including those that called `setsid`, which a
//! process-group kill would miss (`--new-session` gives the sandbox a session of its own
//! anyway). The outer bubblewrap then reaps it and exits. Only if the program cannot be found
//! (killed before bubblewrap cloned it) or the outer bubblewrap does not exit in time does the
//! outer one get SIGKILL; the sandbox then dies with it (`--die-with-parent`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

use super::ExecutorConfig;
use super::policy::Invocation;
use crate::ArmError;

/// The uid and gid the program has inside the sandbox.
const SANDBOX_ID: &str = "1000";
/// Host uid/gid bubblewrap runs as when the service runs as root (`nobody`/`nogroup`).
const UNPRIVILEGED_HOST_ID: u32 = 65534;
const SANDBOX_HOSTNAME: &str = "octollm-sandbox";
const WORKSPACE: &str = "/workspace";
const BASE_ENV: [(&str, &str); 3] = [
    ("PATH", "/usr/bin:/bin"),
    ("HOME", WORKSPACE),
    ("LANG", "C.UTF-8"),
];
/// Top-level host entries that are symlinks into `/usr` on merged-usr systems, or real
/// directories to bind read-only on others. Those missing on the host are skipped.
const SYSTEM_ENTRIES: [&str; 6] = ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];
/// Read-only, if present: the loader cache (faster start) and Debian's alternatives symlinks
/// (some programs in /usr/bin point through them).
const ETC_ALWAYS: [&str; 2] = ["/etc/ld.so.cache", "/etc/alternatives"];
/// Read-only, if present, only when network is granted: name resolution and CA certificates.
const ETC_NETWORK: [&str; 5] = [
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
];
const MAX_OPEN_FILES: u64 = 256;
/// After a kill, how long to wait for the pipes to close before giving up on the rest.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
const READ_CHUNK: usize = 16 * 1024;
const MIB: u64 = 1024 * 1024;

/// How a top-level system entry appears in the sandbox.
#[derive(Debug, Clone, PartialEq)]
enum SystemEntry {
    Symlink { target: PathBuf, path: PathBuf },
    ReadOnly(PathBuf),
}

/// rlimits, applied to bubblewrap and inherited by everything in the sandbox.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Limits {
    pub cpu_seconds: u64,
    pub address_space_bytes: u64,
    pub file_size_bytes: u64,
    pub processes: u64,
    pub open_files: u64,
}

/// One captured output stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Capture {
    pub bytes: Vec<u8>,
    pub truncated: bool,
}

#[derive(Debug)]
pub(crate) struct RunResult {
    /// None when bubblewrap was ended by a signal (the executor killed it).
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Capture,
    pub stderr: Capture,
    pub timed_out: bool,
    pub duration: Duration,
}

#[derive(Debug)]
pub(crate) struct Sandbox {
    bwrap: PathBuf,
    system: Vec<SystemEntry>,
    limits: Limits,
    max_output_bytes: usize,
    /// Size of each of the sandbox's tmpfs, `/tmp` and `/workspace`.
    scratch_bytes: u64,
    workspace_root: PathBuf,
    /// Host uid/gid to start bubblewrap as; None keeps the service's own.
    run_as: Option<(u32, u32)>,
}

impl Sandbox {
    pub(crate) fn new(bwrap: PathBuf, config: &ExecutorConfig) -> Self {
        let system = SYSTEM_ENTRIES
            .iter()
            .filter_map(|entry| {
                let path = PathBuf::from(entry);
                let meta = std::fs::symlink_metadata(&path).ok()?;
                if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&path).ok()?;
                    Some(SystemEntry::Symlink { target, path })
                } else {
                    meta.is_dir().then_some(SystemEntry::ReadOnly(path))
                }
            })
            .collect();
        let running_as_root = rustix::process::geteuid().is_root();
        Self {
            bwrap,
            system,
            limits: Limits {
                cpu_seconds: config.cpu_time_seconds,
                address_space_bytes: config.memory_limit_mb.saturating_mul(MIB),
                file_size_bytes: config.max_file_size_bytes(),
                processes: config.max_processes,
                open_files: MAX_OPEN_FILES,
            },
            max_output_bytes: config.max_output_bytes,
            scratch_bytes: config.scratch_limit_mb.saturating_mul(MIB),
            workspace_root: config
                .workspace_root
                .clone()
                .unwrap_or_else(std::env::temp_dir),
            run_as: running_as_root.then_some((UNPRIVILEGED_HOST_ID, UNPRIVILEGED_HOST_ID)),
        }
    }

    pub(crate) fn bwrap(&self) -> &Path {
        &self.bwrap
    }

    /// bubblewrap's arguments (after `argv[0]`) for `invocation` with its workspace at
    /// `workspace` on the host. Order matters: `--clearenv` before `--setenv`, mounts before
    /// `--remount-ro /`, the program after `--`.
    pub(crate) fn bwrap_args(&self, workspace: &Path, invocation: &Invocation) -> Vec<OsString> {
        let mut args = Args::default();
        args.push([
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--as-pid-1",
        ]);
        if invocation.network {
            args.push(["--share-net"]);
        }
        args.push([
            "--uid",
            SANDBOX_ID,
            "--gid",
            SANDBOX_ID,
            "--hostname",
            SANDBOX_HOSTNAME,
        ]);
        args.push([
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--clearenv",
        ]);
        let env: BTreeMap<&str, &str> = BASE_ENV
            .into_iter()
            .chain(invocation.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .collect();
        for (key, value) in env {
            args.push(["--setenv", key, value]);
        }
        args.push(["--ro-bind", "/usr", "/usr"]);
        for entry in &self.system {
            match entry {
                SystemEntry::Symlink { target, path } => {
                    args.push_os(["--symlink".as_ref(), target.as_os_str(), path.as_os_str()]);
                }
                SystemEntry::ReadOnly(path) => {
                    args.push_os(["--ro-bind".as_ref(), path.as_os_str(), path.as_os_str()]);
                }
            }
        }
        let etc = ETC_ALWAYS.iter().chain(if invocation.network {
            &ETC_NETWORK[..]
        } else {
            &[]
        });
        for path in etc {
            args.push(["--ro-bind-try", path, path]);
        }
        let scratch = self.scratch_bytes.to_string();
        args.push(["--proc", "/proc", "--dev", "/dev"]);
        args.push(["--size", &scratch, "--tmpfs", "/tmp"]);
        args.push(["--size", &scratch, "--tmpfs", WORKSPACE]);
        for (relative, _) in &invocation.files {
            args.push_os([
                "--bind".as_ref(),
                workspace.join(relative).as_os_str(),
                Path::new(WORKSPACE).join(relative).as_os_str(),
            ]);
        }
        args.push(["--chdir", WORKSPACE, "--remount-ro", "/", "--"]);
        args.push_os([invocation.program_path.as_os_str()]);
        args.0.extend(invocation.args.iter().map(OsString::from));
        args.0
    }

    /// Creates the workspace, runs `invocation` in the sandbox with the wall-clock limit
    /// `timeout`, and removes the workspace again.
    pub(crate) async fn run(
        &self,
        invocation: &Invocation,
        timeout: Duration,
    ) -> Result<RunResult, ArmError> {
        let root = self.workspace_root.clone();
        let files = invocation.files.clone();
        let owner = self.run_as;
        let workspace =
            tokio::task::spawn_blocking(move || prepare_workspace(&root, &files, owner))
                .await
                .map_err(|e| ArmError::Internal(format!("workspace setup task failed: {e}")))??;

        let result = self
            .spawn_and_wait(workspace.path(), invocation, timeout)
            .await;

        let path = workspace.path().to_path_buf();
        let removed = tokio::task::spawn_blocking(move || remove_workspace(workspace)).await;
        if !matches!(removed, Ok(Ok(()))) {
            tracing::warn!(workspace = %path.display(), "could not remove the workspace");
        }
        result
    }

    async fn spawn_and_wait(
        &self,
        workspace: &Path,
        invocation: &Invocation,
        timeout: Duration,
    ) -> Result<RunResult, ArmError> {
        // The filter travels on a memfd that only this child inherits (its close-on-exec flag
        // is cleared after the fork, in the child alone).
        let filter = match seccomp_program() {
            Some(program) => Some(seccomp_memfd(&program).map_err(|e| {
                ArmError::Internal(format!("could not prepare the seccomp filter: {e}"))
            })?),
            None => None,
        };
        let filter_fd = filter.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        let mut args: Vec<OsString> = match filter_fd {
            Some(fd) => vec!["--seccomp".into(), fd.to_string().into()],
            None => Vec::new(),
        };
        args.extend(self.bwrap_args(workspace, invocation));
        let mut command = Command::new(&self.bwrap);
        command
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        set_rlimits_in_child(&mut command, self.limits, filter_fd);

        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut child = command.spawn().map_err(|e| {
            ArmError::Internal(format!("could not start {}: {e}", self.bwrap.display()))
        })?;
        // The child has its copy; ours can go.
        drop(filter);
        // Held here, not by the readers, so a reader that stops at the cap does not close its
        // pipe: the program is killed by us, not by SIGPIPE at a moment of its choosing.
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();

        let cap = self.max_output_bytes;
        let overflow = Notify::new();
        let mut out = Capture::default();
        let mut err = Capture::default();
        let mut timed_out = false;
        let mut killed = false;
        {
            let reading = async {
                tokio::join!(
                    read_capped(stdout.as_mut(), cap, &mut out, &overflow),
                    read_capped(stderr.as_mut(), cap, &mut err, &overflow),
                )
            };
            tokio::pin!(reading);
            tokio::select! {
                _ = &mut reading => {}
                () = tokio::time::sleep_until(deadline) => {
                    timed_out = true;
                    killed = true;
                }
                () = overflow.notified() => killed = true,
            }
            if killed {
                kill_sandbox(&mut child);
                // The pipes close once every process in the sandbox is gone.
                let _ = tokio::time::timeout(DRAIN_GRACE, &mut reading).await;
            }
        }
        // Both pipes may close while the program still runs; the deadline still holds.
        let status = if killed {
            reap(&mut child).await
        } else {
            match tokio::time::timeout_at(deadline, child.wait()).await {
                Ok(status) => status,
                Err(_elapsed) => {
                    timed_out = true;
                    killed = true;
                    kill_sandbox(&mut child);
                    reap(&mut child).await
                }
            }
        }
        .map_err(|e| ArmError::Internal(format!("waiting for bubblewrap failed: {e}")))?;

        // bubblewrap reports a program killed by a signal as 128 + signal; when we did the
        // killing, say so directly.
        let (exit_code, signal) = if killed {
            (None, Some(libc::SIGKILL))
        } else {
            (status.code(), status.signal())
        };
        Ok(RunResult {
            exit_code,
            signal,
            stdout: out,
            stderr: err,
            timed_out,
            duration: started.elapsed(),
        })
    }
}

/// bubblewrap's argv under construction.
#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn push<const N: usize>(&mut self, items: [&str; N]) {
        self.0.extend(items.into_iter().map(OsString::from));
    }

    fn push_os<const N: usize>(&mut self, items: [&std::ffi::OsStr; N]) {
        self.0.extend(items.into_iter().map(OsString::from));
    }
}

/// SIGKILL to the sandboxed program (PID 1 of the sandbox), or to the outer bubblewrap if the
/// program cannot be found; see the module docs for why either ends the whole sandbox.
fn kill_sandbox(child: &mut Child) {
    use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};
    let Some(outer) = child.id() else { return }; // already reaped
    let killed_program = sandboxed_program(outer).is_some_and(|program| {
        let Some(pid) = Pid::from_raw(program) else {
            return false;
        };
        let Ok(pidfd) = pidfd_open(pid, PidfdFlags::empty()) else {
            return false;
        };
        // Still the outer bubblewrap's child after the pidfd was opened, so the pidfd names
        // the program and not a process that reused its pid.
        sandboxed_program(outer) == Some(program) && pidfd_send_signal(&pidfd, Signal::KILL).is_ok()
    });
    if !killed_program {
        // Fails only when it has already exited, which is what we want anyway.
        let _ = child.start_kill();
    }
}

/// The host pid of the outer bubblewrap's only child: the sandboxed program.
fn sandboxed_program(outer: u32) -> Option<i32> {
    let children = std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// Waits for the outer bubblewrap after the program was killed; it exits as soon as it has
/// reaped the program. Should it not, it is killed too.
async fn reap(child: &mut Child) -> io::Result<std::process::ExitStatus> {
    match tokio::time::timeout(DRAIN_GRACE, child.wait()).await {
        Ok(status) => status,
        Err(_elapsed) => {
            let _ = child.start_kill();
            child.wait().await
        }
    }
}

/// Reads `stream` into `capture` until EOF, an error, or `cap` bytes; past the cap it marks the
/// capture truncated, notifies `overflow` and stops reading.
async fn read_capped(
    stream: Option<impl AsyncRead + Unpin>,
    cap: usize,
    capture: &mut Capture,
    overflow: &Notify,
) {
    let Some(mut stream) = stream else { return };
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => return,
            Ok(n) => {
                let room = cap.saturating_sub(capture.bytes.len());
                if n > room {
                    capture.bytes.extend_from_slice(&chunk[..room]);
                    capture.truncated = true;
                    overflow.notify_one();
                    return;
                }
                capture.bytes.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The seccomp filter, as the classic BPF program bubblewrap's `--seccomp` reads: deny (with
/// `EPERM`) the listed calls and any call of another ABI, allow the rest.
#[cfg(target_arch = "x86_64")]
pub(crate) fn seccomp_program() -> Option<Vec<u8>> {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;
    let denied: Vec<u32> = DENIED_SYSCALLS
        .iter()
        .filter_map(|&nr| u32::try_from(nr).ok())
        .collect();
    let n = u8::try_from(denied.len()).ok()?;
    let mut program: Vec<(u16, u8, u8, u32)> = vec![
        (LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        (JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        (RET_K, 0, 0, RET_EPERM), // the 32-bit ABI: its numbers differ, refuse it whole
        (LD_W_ABS, 0, 0, 0),      // seccomp_data.nr
        (JGE_K, n.checked_add(1)?, 0, X32_SYSCALL_BIT),
    ];
    for (i, nr) in (0u8..).zip(&denied) {
        program.push((JEQ_K, n - i, 0, *nr));
    }
    program.push((RET_K, 0, 0, RET_ALLOW));
    program.push((RET_K, 0, 0, RET_EPERM));
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for (code, jt, jf, k) in program {
        bytes.extend_from_slice(&code.to_ne_bytes());
        bytes.push(jt);
        bytes.push(jf);
        bytes.extend_from_slice(&k.to_ne_bytes());
    }
    Some(bytes)
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn seccomp_program() -> Option<Vec<u8>> {
    None
}

/// What a sandboxed program may not call (x86_64 numbers).
#[cfg(target_arch = "x86_64")]
const DENIED_SYSCALLS: [libc::c_long; 44] = [
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_acct,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_syslog,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_adjtimex,
    libc::SYS_clock_adjtime,
    libc::SYS_quotactl,
    libc::SYS_iopl,
    libc::SYS_ioperm,
];

/// A memfd holding `program`, read from its start (close-on-exec in this process).
fn seccomp_memfd(program: &[u8]) -> io::Result<std::fs::File> {
    use std::io::{Seek, Write};
    let fd = rustix::fs::memfd_create("octollm-seccomp", rustix::fs::MemfdFlags::CLOEXEC)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(program)?;
    file.seek(io::SeekFrom::Start(0))?;
    Ok(file)
}

/// Sets the rlimits in the forked child, just before bubblewrap is executed, and lets it
/// inherit `inherit_fd` (the seccomp filter).
#[expect(
    unsafe_code,
    reason = "rlimits must be set between fork and exec; `pre_exec` is the only hook and is unsafe"
)]
fn set_rlimits_in_child(
    command: &mut Command,
    limits: Limits,
    inherit_fd: Option<std::os::fd::RawFd>,
) {
    // CPU gets a hard limit one second above the soft one: SIGXCPU first, then SIGKILL.
    let table = [
        (
            libc::RLIMIT_CPU,
            limits.cpu_seconds,
            limits.cpu_seconds.saturating_add(1),
        ),
        (
            libc::RLIMIT_AS,
            limits.address_space_bytes,
            limits.address_space_bytes,
        ),
        (
            libc::RLIMIT_FSIZE,
            limits.file_size_bytes,
            limits.file_size_bytes,
        ),
        (libc::RLIMIT_NPROC, limits.processes, limits.processes),
        (libc::RLIMIT_NOFILE, limits.open_files, limits.open_files),
        (libc::RLIMIT_CORE, 0, 0),
    ];
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe functions may be called. It only calls setrlimit(2), a plain system
    // call, on a `Copy` array moved into the closure, and on failure reads errno through
    // `io::Error::last_os_error`, which does not allocate. No locks, no allocation, no shared
    // state. The limits only ever lower what the parent has, so setrlimit cannot need privilege.
    unsafe {
        command.pre_exec(move || {
            for (resource, soft, hard) in table {
                let limit = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // fcntl(2) is async-signal-safe; it clears close-on-exec on this child's copy of
            // the descriptor only (descriptor flags are per process).
            if let Some(fd) = inherit_fd
                && libc::fcntl(fd, libc::F_SETFD, 0) == -1
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A fresh directory under `root` holding `files`, owned by `owner` when given.
fn prepare_workspace(
    root: &Path,
    files: &[(PathBuf, String)],
    owner: Option<(u32, u32)>,
) -> Result<tempfile::TempDir, ArmError> {
    let internal = |what: &str, e: io::Error| {
        ArmError::Internal(format!("workspace: {what} under {}: {e}", root.display()))
    };
    std::fs::create_dir_all(root).map_err(|e| internal("creating the root", e))?;
    let dir = tempfile::Builder::new()
        .prefix("octollm-exec-")
        .tempdir_in(root)
        .map_err(|e| internal("creating a directory", e))?;
    for (relative, contents) in files {
        let path = dir.path().join(relative);
        let written = match path.parent() {
            Some(parent) => std::fs::create_dir_all(parent),
            None => Ok(()),
        }
        .and_then(|()| std::fs::write(&path, contents));
        // The paths were checked in `policy`; what is left is e.g. `a` and `a/b` both given.
        written.map_err(|e| {
            ArmError::InvalidRequest(format!("cannot write file `{}`: {e}", relative.display()))
        })?;
    }
    if let Some((uid, gid)) = owner {
        chown_tree(dir.path(), uid, gid)
            .map_err(|e| internal("handing it to the sandbox user", e))?;
    }
    Ok(dir)
}

/// `lchown -R`. The tree is ours and freshly made, so it holds no symlinks to follow anyway.
fn chown_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Removes the workspace. The sandboxed program may have left directories it made
/// unreadable, which stops removal when the service is not root: on failure, make every
/// directory accessible again and retry.
fn remove_workspace(workspace: tempfile::TempDir) -> io::Result<()> {
    let path = workspace.path().to_path_buf();
    match workspace.close() {
        Ok(()) => Ok(()),
        Err(_) => {
            restore_dir_access(&path);
            std::fs::remove_dir_all(&path)
        }
    }
}

fn restore_dir_access(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            restore_dir_access(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invocation(network: bool) -> Invocation {
        Invocation {
            program: "echo".into(),
            program_path: PathBuf::from("/usr/bin/echo"),
            args: vec!["a b".into(), "$(id)".into()],
            env: BTreeMap::from([("LANG".to_owned(), "en_US.UTF-8".to_owned())]),
            files: vec![(PathBuf::from("data/in.txt"), "input".to_owned())],
            timeout: Duration::from_secs(1),
            network,
        }
    }

    fn sandbox() -> Sandbox {
        let mut sandbox = Sandbox::new(PathBuf::from("/usr/bin/bwrap"), &ExecutorConfig::default());
        sandbox.system = vec![
            SystemEntry::Symlink {
                target: "usr/bin".into(),
                path: "/bin".into(),
            },
            SystemEntry::ReadOnly("/lib64".into()),
        ];
        sandbox
    }

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn the_bwrap_command_line_is_exactly_this() {
        let args = strings(sandbox().bwrap_args(Path::new("/tmp/ws"), &invocation(false)));
        let expected = "--unshare-all --unshare-user --disable-userns --as-pid-1 \
            --uid 1000 --gid 1000 --hostname octollm-sandbox \
            --die-with-parent --new-session --cap-drop ALL --clearenv \
            --setenv HOME /workspace --setenv LANG en_US.UTF-8 --setenv PATH /usr/bin:/bin \
            --ro-bind /usr /usr --symlink usr/bin /bin --ro-bind /lib64 /lib64 \
            --ro-bind-try /etc/ld.so.cache /etc/ld.so.cache \
            --ro-bind-try /etc/alternatives /etc/alternatives \
            --proc /proc --dev /dev --size 268435456 --tmpfs /tmp \
            --size 268435456 --tmpfs /workspace \
            --bind /tmp/ws/data/in.txt /workspace/data/in.txt \
            --chdir /workspace --remount-ro / -- /usr/bin/echo";
        let (head, tail) = args.split_at(args.len() - 2);
        assert_eq!(head.join(" "), expected);
        // Arguments stay single argv entries, never re-split or interpreted.
        assert_eq!(tail, ["a b", "$(id)"]);
    }

    #[test]
    fn network_is_shared_only_when_granted_and_brings_resolver_files() {
        let without = strings(sandbox().bwrap_args(Path::new("/w"), &invocation(false)));
        assert!(
            !without
                .iter()
                .any(|a| a == "--share-net" || a == "/etc/resolv.conf")
        );
        let with = strings(sandbox().bwrap_args(Path::new("/w"), &invocation(true)));
        assert!(with.iter().any(|a| a == "--share-net"));
        assert!(with.iter().any(|a| a == "/etc/resolv.conf"));
    }

    #[tokio::test]
    async fn the_reader_stops_at_the_cap_and_says_so() {
        let overflow = Notify::new();
        let mut capture = Capture::default();
        read_capped(Some(&b"0123456789"[..]), 4, &mut capture, &overflow).await;
        assert_eq!(
            capture,
            Capture {
                bytes: b"0123".to_vec(),
                truncated: true
            }
        );
        overflow.notified().await; // the permit was stored

        let mut capture = Capture::default();
        read_capped(Some(&b"0123"[..]), 4, &mut capture, &overflow).await;
        assert_eq!(
            capture,
            Capture {
                bytes: b"0123".to_vec(),
                truncated: false
            }
        );
    }
}
