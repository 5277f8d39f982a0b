//! The operator as a real process for end-to-end suites: one per test binary, with its own
//! operator namespace and a file:// repository, stopped when the test binary exits.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rewind::repository::{MasterKey, Repository};

use super::{Bed, repo_root, unique};

/// A running operator.
pub struct Operator {
    _child: Child,
    /// Its namespace (leader lease, account locks).
    pub namespace: String,
    /// Its repository URL.
    pub repository: String,
    /// The repository key, hex.
    pub key_hex: String,
    /// Its log file.
    pub log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

static OPERATOR: OnceLock<Operator> = OnceLock::new();

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18081)
}

impl Operator {
    /// The operator of this test binary, started on first use with `extra_args`.
    pub fn shared(bed: &Bed, extra_args: &[&str]) -> &'static Operator {
        OPERATOR.get_or_init(|| Operator::start(bed, extra_args))
    }

    fn start(bed: &Bed, extra_args: &[&str]) -> Operator {
        let crds = repo_root().join("crds");
        bed.kubectl_ok(&["apply", "-k", &crds.to_string_lossy()]);
        bed.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "crd/accountbackups.rewind.dev",
            "crd/projectrestores.rewind.dev",
            "--timeout=60s",
        ]);
        let namespace = unique("rewind-e2e");
        bed.kubectl_ok(&["create", "namespace", &namespace]);
        let dir = tempfile::tempdir().expect("temp dir");
        let repository = format!("file://{}/repository", dir.path().display());
        let key_hex = hex::encode(rand_bytes());
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, &key_hex).expect("key file");
        let log = dir.path().join("operator.log");
        let port = free_port();
        let binary = env!("CARGO_BIN_EXE_rewind");
        // The wrapper shell stops the operator when this test binary's end of the pipe closes.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec 3<&0; "$@" </dev/null >"$LOG" 2>&1 & pid=$!; cat <&3 >/dev/null; kill -TERM $pid; wait $pid"#)
            .arg("sh")
            .arg(binary)
            .arg("run")
            .args(["--namespace", &namespace, "--identity", &namespace, "--probe-addr", &format!("127.0.0.1:{port}")])
            .args(["--repository", &repository, "--repository-key-file", &key_file.to_string_lossy(), "--log-format", "json"])
            .args(extra_args)
            .env("LOG", &log)
            .env("RUST_LOG", "info,rewind=debug")
            .envs(bed.envs())
            .stdin(Stdio::piped())
            .spawn()
            .expect("start the operator");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::Write;
                let _ = stream.write_all(b"GET /readyz HTTP/1.1\r\n\r\n");
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.1 200") {
                    break;
                }
            }
            if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                panic!(
                    "the operator did not become ready:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Operator {
            _child: child,
            namespace,
            repository,
            key_hex,
            log,
            _dir: dir,
        }
    }

    /// The operator's repository, opened with its key.
    pub async fn repository(&self) -> Repository {
        let key = MasterKey::from_text(&self.key_hex).expect("key");
        Repository::open(&self.repository, &key)
            .await
            .expect("open the operator's repository")
    }

    /// The end of the operator's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

fn rand_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(1);
    let mut state = (nanos as u64) | 1;
    for byte in &mut bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    bytes
}
