//! A harness that runs the real `kefu serve` binary on a free loopback port
//! over a data directory, plus a prepared copy of the demo library (imported
//! and indexed once per test binary, then copied per test).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{kefu_bin, model_dir};

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    pub base: String,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Copies a folder tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// A data directory holding the demo library, imported and indexed once.
fn demo_template() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Templates of earlier test runs whose process is gone are removed.
        for e in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("kefu-demo-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = std::env::temp_dir().join(format!("kefu-demo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = kefu(&["import", "--demo", "--data-dir", dir.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "demo import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// A fresh copy of the demo data directory for one test.
pub fn demo_data_dir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(demo_template(), tmp.path());
    tmp
}

/// Runs a kefu command that prints JSON (`--json`); it must succeed.
pub fn kefu_json(args: &[&str]) -> serde_json::Value {
    let out = kefu(args);
    assert!(
        out.status.success(),
        "kefu {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

/// Runs a kefu command with the test model.
pub fn kefu(args: &[&str]) -> std::process::Output {
    Command::new(kefu_bin())
        .args(args)
        .env("KEFU_MODEL", model_dir())
        .env_remove("KEFU_API_KEYS")
        .output()
        .unwrap()
}

impl Server {
    /// Starts `kefu serve` on `data_dir` and waits until `/readyz` says ready.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let mut cmd = Command::new(kefu_bin());
        cmd.args([
            "serve",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data_dir)
        .env("KEFU_MODEL", model_dir())
        .env_remove("KEFU_API_KEYS")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("kefu serve starts");
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        server.wait_ready(Duration::from_secs(180));
        server
    }

    fn wait_ready(&self, limit: Duration) {
        let started = Instant::now();
        let client = reqwest::blocking::Client::new();
        loop {
            if let Ok(r) = client.get(self.url("/readyz")).send() {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                started.elapsed() < limit,
                "server not ready after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGKILL, no cleanup.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a graceful exit; returns whether it exited 0.
    pub fn stop(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            if started.elapsed() > Duration::from_secs(30) {
                self.kill9();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP client with a generous timeout.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}
