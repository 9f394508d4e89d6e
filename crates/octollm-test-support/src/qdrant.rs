//! A throwaway Qdrant server: the binary (or its gzip) named by `OCTOLLM_QDRANT_BIN`
//! (`scripts/env.sh` points it at the workplace's build of Qdrant 1.13.6 when it finds one),
//! on free loopback ports with its storage in a temporary directory, killed when dropped. Or
//! an existing server named by `QDRANT_URL`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// Where a Qdrant server for tests can come from, if anywhere.
pub fn source() -> Option<Source> {
    if let Ok(url) = std::env::var("QDRANT_URL")
        && !url.is_empty()
    {
        return Some(Source::Url(url));
    }
    if let Ok(bin) = std::env::var("OCTOLLM_QDRANT_BIN")
        && !bin.is_empty()
    {
        return Some(Source::Archive(PathBuf::from(bin)));
    }
    None
}

#[derive(Debug, Clone)]
pub enum Source {
    /// A running server's gRPC URL.
    Url(String),
    /// A gzipped server binary (or the binary itself) to run here.
    Archive(PathBuf),
}

pub struct Qdrant {
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
    /// The gRPC URL (what the project's client speaks).
    pub url: String,
}

impl Qdrant {
    /// A server from `source`, ready for requests.
    pub fn start(source: &Source) -> Qdrant {
        let archive = match source {
            Source::Url(url) => {
                return Qdrant {
                    child: None,
                    _dir: None,
                    url: url.clone(),
                };
            }
            Source::Archive(path) => path,
        };
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("qdrant");
        let unpacked = if archive.extension().is_some_and(|e| e == "gz") {
            let out = std::fs::File::create(&bin).unwrap();
            Command::new("gunzip")
                .arg("-c")
                .arg(archive)
                .stdout(out)
                .status()
                .unwrap()
                .success()
        } else {
            std::fs::copy(archive, &bin).is_ok()
        };
        assert!(unpacked, "cannot unpack {}", archive.display());
        Command::new("chmod").arg("+x").arg(&bin).status().unwrap();
        let (http, grpc) = (free_port(), free_port());
        let child = Command::new(&bin)
            .env("QDRANT__STORAGE__STORAGE_PATH", dir.path().join("storage"))
            .env("QDRANT__SERVICE__HOST", "127.0.0.1")
            .env("QDRANT__SERVICE__HTTP_PORT", http.to_string())
            .env("QDRANT__SERVICE__GRPC_PORT", grpc.to_string())
            .env("QDRANT__TELEMETRY_DISABLED", "true")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", http)).is_err()
        {
            assert!(Instant::now() < deadline, "Qdrant did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Qdrant {
            child: Some(child),
            _dir: Some(dir),
            url: format!("http://127.0.0.1:{grpc}"),
        }
    }
}

impl Drop for Qdrant {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
