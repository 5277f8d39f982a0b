//! The operator as a real process for end-to-end suites: one per test binary, with its own
//! operator namespace and a file:// repository, stopped when the test binary exits.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rewind::repository::{MasterKey, Repository};

use super::{Bed, repo_root, unique};

/// A running operator.
pub struct Operator {
    child: Child,
    /// Its namespace (leader lease, account locks).
    pub namespace: String,
    /// Its repository URL.
    pub repository: String,
    /// The repository key, hex.
    pub key_hex: String,
    /// Its log file.
    pub log: PathBuf,
    /// Port of /healthz, /readyz, /metrics.
    pub port: u16,
    pid_file: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// How to start one operator process.
pub struct Launch<'a> {
    /// Operator namespace (leader lease, account locks); must exist.
    pub namespace: &'a str,
    /// Leader-election identity.
    pub identity: &'a str,
    /// Directory of the file:// repository (shared by replicas of one deployment).
    pub state_dir: &'a std::path::Path,
    /// Repository key, hex.
    pub key_hex: &'a str,
    /// More `rewind run` flags.
    pub extra_args: &'a [&'a str],
    /// Another repository than the file:// one in `state_dir` (e.g. S3 through a fault proxy).
    pub repository: Option<&'a str>,
    /// More environment (e.g. AWS_ENDPOINT for that repository).
    pub env: &'a [(&'a str, &'a str)],
}

static OPERATOR: OnceLock<Operator> = OnceLock::new();

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18081)
}

/// Whether this test binary installed the CRDs and admission policies on the bed.
static CRDS_INSTALLED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);

/// A fresh random repository key, hex.
pub fn new_key_hex() -> String {
    hex::encode(rand_bytes())
}

impl Operator {
    /// The operator of this test binary, started on first use with `extra_args`.
    pub fn shared(bed: &Bed, extra_args: &[&str]) -> &'static Operator {
        OPERATOR.get_or_init(|| {
            Self::install_crds(bed);
            let namespace = unique("rewind-e2e");
            bed.kubectl_ok(&["create", "namespace", &namespace]);
            let dir = tempfile::tempdir().expect("temp dir");
            let key_hex = new_key_hex();
            let mut operator = Self::spawn(
                bed,
                &Launch {
                    namespace: &namespace,
                    identity: &namespace,
                    state_dir: dir.path(),
                    key_hex: &key_hex,
                    extra_args,
                    repository: None,
                    env: &[],
                },
            );
            operator._dir = Some(dir);
            operator
        })
    }

    /// Applies the CRDs and the chart's tenant-isolation admission policies (bed-wide, as a
    /// default install has them: every suite's operator and tests run under them), and waits
    /// until the CRDs are served.
    ///
    /// Once per test binary, whichever test asks first: tests run in parallel, and two
    /// concurrent `kubectl apply` of a CRD that does not exist yet race (one gets AlreadyExists).
    pub fn install_crds(bed: &Bed) {
        let mut installed = CRDS_INSTALLED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *installed {
            return;
        }
        let crds = repo_root().join("crds");
        bed.wait_until(
            "the CRDs to apply",
            Duration::from_secs(60),
            || bed.kubectl(&["apply", "-k", &crds.to_string_lossy()]).ok(),
            || {
                bed.kubectl(&["apply", "-k", &crds.to_string_lossy()])
                    .unwrap_or_else(|e| e)
            },
        );
        let policies = bed.render_chart(
            "rewind",
            "rewind-system",
            &["templates/account-ownership.yaml"],
        );
        bed.kubectl_with_stdin(&["apply", "-f", "-"], Some(policies.as_bytes()))
            .expect("apply the chart's admission policies");
        bed.wait_established(&[
            "accountbackups.rewind.dev",
            "projectrestores.rewind.dev",
            "backupschedules.rewind.dev",
        ]);
        Self::wait_rewind_kinds_creatable(bed);
        *installed = true;
    }

    /// Makes the next [`Operator::install_crds`] install them again: the bed was brought up anew.
    pub fn forget_installed_crds() {
        *CRDS_INSTALLED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = false;
    }

    /// Waits until each Rewind kind passes admission in a server-side dry run. Established is
    /// not yet creatable: the mutating admission policy learns a kind's schema a few seconds
    /// after its CRD appears — and again after an API server restart — and answers 503
    /// "Resource kind … not found" until then.
    pub fn wait_rewind_kinds_creatable(bed: &Bed) {
        let probe = "apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {name: rewind-e2e-probe}\nspec: {account: probe}\n---\napiVersion: rewind.dev/v1alpha1\nkind: ProjectRestore\nmetadata: {name: rewind-e2e-probe}\nspec: {account: probe, backup: probe}\n---\napiVersion: rewind.dev/v1alpha1\nkind: BackupSchedule\nmetadata: {name: rewind-e2e-probe}\nspec: {account: probe}\n";
        let dry_run = || {
            bed.kubectl_with_stdin(
                &["create", "--dry-run=server", "-f", "-"],
                Some(probe.as_bytes()),
            )
        };
        bed.wait_until(
            "the Rewind kinds to be creatable (admission knows them)",
            Duration::from_secs(90),
            || dry_run().ok(),
            || dry_run().unwrap_or_else(|e| e),
        );
    }

    /// Starts an operator process; `wait_ready` waits for /readyz.
    pub fn spawn(bed: &Bed, launch: &Launch<'_>) -> Operator {
        let repository = launch.repository.map_or_else(
            || format!("file://{}/repository", launch.state_dir.display()),
            str::to_string,
        );
        let key_file = launch.state_dir.join("key");
        std::fs::write(&key_file, launch.key_hex).expect("key file");
        let log = launch.state_dir.join(format!("{}.log", launch.identity));
        let pid_file = launch.state_dir.join(format!("{}.pid", launch.identity));
        let kubeconfig = Self::impersonating_kubeconfig(bed, launch.namespace, launch.state_dir);
        let port = free_port();
        let binary = env!("CARGO_BIN_EXE_rewind");
        // The wrapper shell stops the operator when this test binary's end of the pipe closes.
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec 3<&0; "$@" </dev/null >>"$LOG" 2>&1 & pid=$!; echo $pid >"$PIDFILE"; cat <&3 >/dev/null; kill -TERM $pid 2>/dev/null; wait $pid"#)
            .arg("sh")
            .arg(binary)
            .arg("run")
            .args(["--namespace", launch.namespace, "--identity", launch.identity, "--probe-addr", &format!("127.0.0.1:{port}")])
            .args(["--repository", &repository, "--repository-key-file", &key_file.to_string_lossy(), "--log-format", "json"])
            .args(launch.extra_args)
            .env("LOG", &log)
            .env("PIDFILE", &pid_file)
            .env("RUST_LOG", "info,rewind=debug")
            .envs(bed.envs())
            .env("KUBECONFIG", &kubeconfig)
            .envs(launch.env.iter().copied())
            .stdin(Stdio::piped())
            .spawn()
            .expect("start the operator");
        let mut operator = Operator {
            child,
            namespace: launch.namespace.to_string(),
            repository,
            key_hex: launch.key_hex.to_string(),
            log,
            port,
            pid_file,
            _dir: None,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !operator.get("/readyz").starts_with("HTTP/1.1 200") {
            if Instant::now() > deadline || operator.child.try_wait().ok().flatten().is_some() {
                panic!(
                    "the operator did not become ready:\n{}",
                    std::fs::read_to_string(&operator.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        operator
    }

    /// Installs the chart's ServiceAccount and operator RBAC for a release named after `namespace`,
    /// and writes a kubeconfig that impersonates that ServiceAccount: the operator under test has
    /// exactly the chart's permissions, no more.
    fn impersonating_kubeconfig(bed: &Bed, namespace: &str, dir: &std::path::Path) -> PathBuf {
        let rbac = bed.render_chart(
            namespace,
            namespace,
            &[
                "templates/serviceaccount.yaml",
                "templates/rbac-operator.yaml",
            ],
        );
        bed.kubectl_with_stdin(&["apply", "-f", "-"], Some(rbac.as_bytes()))
            .expect("apply the chart's RBAC");
        let source = bed.var("KUBECONFIG").expect("the bed's KUBECONFIG");
        let mut config: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(source).expect("kubeconfig"))
                .expect("kubeconfig YAML");
        let user = format!("system:serviceaccount:{namespace}:{namespace}-operator");
        if let Some(users) = config.get_mut("users").and_then(|u| u.as_sequence_mut()) {
            for entry in users {
                if let Some(fields) = entry.get_mut("user").and_then(|u| u.as_mapping_mut()) {
                    fields.insert("as".into(), user.clone().into());
                }
            }
        }
        let path = dir.join("kubeconfig-operator.yaml");
        std::fs::write(
            &path,
            serde_yaml::to_string(&config).expect("kubeconfig YAML"),
        )
        .expect("write kubeconfig");
        path
    }

    /// An HTTP GET on the probe port: the whole response, or "" when it does not answer.
    pub fn get(&self, path: &str) -> String {
        use std::io::Write;
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let _ = stream.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes());
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    /// Stops the operator with SIGTERM (graceful) and waits for it.
    pub fn stop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }

    /// Kills the operator with SIGKILL: no cleanup, as in a node failure.
    pub fn kill_hard(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file) {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }

    /// Resets the process's peak resident memory to what it holds now (Linux `clear_refs` 5),
    /// so [`Operator::peak_rss_mib`] reads the peak from here on.
    pub fn reset_peak_rss(&self) {
        let pid = std::fs::read_to_string(&self.pid_file).unwrap_or_default();
        std::fs::write(format!("/proc/{}/clear_refs", pid.trim()), "5")
            .expect("resetting the operator's peak RSS (needs Linux 4.0 and the same user)");
    }

    /// The operator process's peak resident memory (VmHWM), MiB; NaN when it is gone.
    pub fn peak_rss_mib(&self) -> f64 {
        self.memory_mib("VmHWM:")
    }

    /// A memory figure of the process from /proc (`VmRSS:`, `VmHWM:` ...), in MiB; NaN if unknown.
    pub fn memory_mib(&self, field: &str) -> f64 {
        let pid = std::fs::read_to_string(&self.pid_file).unwrap_or_default();
        std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    }

    /// CPU time the operator process has used so far (user + system), seconds; NaN if unknown.
    pub fn cpu_seconds(&self) -> f64 {
        let pid = std::fs::read_to_string(&self.pid_file).unwrap_or_default();
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
        // Fields after the command name (which may hold spaces), from its closing parenthesis.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |at: usize| fields.get(at).and_then(|t| t.parse::<f64>().ok());
        // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
        match (ticks(11), ticks(12)) {
            (Some(user), Some(system)) => (user + system) / 100.0,
            _ => f64::NAN,
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
