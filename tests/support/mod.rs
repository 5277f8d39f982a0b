//! Shared helpers of the end-to-end suites: the test bed's settings, kubectl, fresh namespaces
//! that clean up after themselves, bounded waits that print the cluster when they give up.
//!
//! The bed is the local one (`make cluster-up` writes `.testbed/env`), or any cluster named by
//! `REWIND_E2E_KUBECONFIG` (e.g. kind); then only what that cluster cannot do is skipped, loudly.
#![allow(dead_code)]

pub mod data;
pub mod fault_proxy;
pub mod movers;
pub mod operator;
pub mod real_node;
pub mod tree;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The cluster and services an end-to-end test runs against.
pub struct Bed {
    vars: BTreeMap<String, String>,
    /// True when REWIND_E2E_KUBECONFIG points at a cluster other than the local bed.
    pub external: bool,
}

/// The checkout's root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

impl Bed {
    /// The bed, or a panic that says how to get one.
    pub fn get() -> Bed {
        if let Ok(kubeconfig) = std::env::var("REWIND_E2E_KUBECONFIG") {
            let mut vars = BTreeMap::new();
            vars.insert("KUBECONFIG".into(), kubeconfig);
            vars.insert(
                "KUBECTL".into(),
                std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()),
            );
            vars.insert(
                "HELM".into(),
                std::env::var("HELM").unwrap_or_else(|_| "helm".into()),
            );
            return Bed {
                vars,
                external: true,
            };
        }
        let path = repo_root().join(".testbed/env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!(
                "no test bed: {} is missing. Run `make cluster-up` (or set REWIND_E2E_KUBECONFIG to use another cluster)",
                path.display()
            )
        });
        Bed {
            vars: parse_env(&text),
            external: false,
        }
    }

    /// A setting of the bed (`S3_ENDPOINT`, `PGPORT`, ...).
    pub fn var(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    /// A setting this test cannot do without; on an external cluster a missing one skips the test.
    pub fn require(&self, key: &str, what: &str) -> Option<String> {
        match self.var(key) {
            Some(value) => Some(value.to_string()),
            None if self.external => {
                eprintln!(
                    "SKIPPED on REWIND_E2E_KUBECONFIG cluster: {what} needs {key}, which that cluster does not provide"
                );
                None
            }
            None => panic!(
                "the test bed's .testbed/env has no {key}: run `make cluster-down && make cluster-up`"
            ),
        }
    }

    /// Environment for child processes (kubectl, helm, the operator).
    pub fn envs(&self) -> Vec<(String, String)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn command(&self, program_var: &str, default: &str) -> Command {
        let program = self.var(program_var).unwrap_or(default).to_string();
        let mut command = Command::new(program);
        command.envs(self.envs());
        command
    }

    /// A kube client for the bed's cluster, from its kubeconfig (not the process environment).
    pub async fn client(&self) -> kube::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let path = self
            .var("KUBECONFIG")
            .expect("the bed names its KUBECONFIG");
        let kubeconfig = kube::config::Kubeconfig::read_from(path).expect("the bed's kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("a client configuration");
        kube::Client::try_from(config).expect("a client")
    }

    /// Runs kubectl; Ok(stdout) on success, Err(stderr) otherwise.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.kubectl_with_stdin(args, None)
    }

    /// Runs kubectl feeding `stdin`.
    pub fn kubectl_with_stdin(
        &self,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<String, String> {
        let mut command = self.command("KUBECTL", "kubectl");
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run kubectl: {e}"))?;
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(bytes)
                .map_err(|e| format!("writing to kubectl: {e}"))?;
        }
        let output = child
            .wait_with_output()
            .map_err(|e| format!("kubectl: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout)
            ))
        }
    }

    /// Runs kubectl and panics with its error when it fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        self.kubectl(args).unwrap_or_else(|err| panic!("{err}"))
    }

    /// `kubectl apply -f -` of a YAML document.
    pub fn apply(&self, yaml: &str) {
        self.kubectl_with_stdin(&["apply", "-f", "-"], Some(yaml.as_bytes()))
            .unwrap_or_else(|err| panic!("{err}\n--- manifest ---\n{yaml}"));
    }

    /// Runs helm.
    pub fn helm(&self, args: &[&str]) -> Result<String, String> {
        let output = self
            .command("HELM", "helm")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run helm: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "helm {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// The chart's `templates` rendered as a default install (release `rewind` in
    /// `rewind-system`, or `release` in `namespace`), for tests that apply parts of it.
    pub fn render_chart(&self, release: &str, namespace: &str, templates: &[&str]) -> String {
        let chart = repo_root().join("charts/rewind");
        let chart = chart.to_string_lossy();
        let mut args = vec![
            "template",
            release,
            &chart,
            "--namespace",
            namespace,
            "--kube-version",
            "1.36.0",
        ];
        for template in templates {
            args.extend(["--show-only", template]);
        }
        self.helm(&args)
            .unwrap_or_else(|err| panic!("rendering {templates:?}: {err}"))
    }

    /// A new namespace that is a project of `account` (labelled `rewind.dev/account`).
    pub fn project(&self, prefix: &str, account: &str) -> TestNamespace<'_> {
        let project = self.namespace(prefix);
        self.kubectl_ok(&[
            "label",
            "namespace",
            &project.name,
            &format!("rewind.dev/account={account}"),
        ]);
        project
    }

    /// A namespace someone else creates (a restore's target), deleted when the guard drops.
    pub fn adopt_namespace(&self, name: &str) -> TestNamespace<'_> {
        TestNamespace {
            bed: self,
            name: name.to_string(),
        }
    }

    /// A new namespace named `<prefix>-<random>`, deleted when the returned guard drops.
    pub fn namespace(&self, prefix: &str) -> TestNamespace<'_> {
        let name = unique(prefix);
        self.kubectl_ok(&["create", "namespace", &name]);
        // Pods are refused until the controller manager has made the namespace's `default`
        // ServiceAccount: wait for it rather than race it.
        self.wait_until(
            &format!("ServiceAccount {name}/default"),
            Duration::from_secs(60),
            || {
                self.kubectl(&["-n", &name, "get", "serviceaccount", "default"])
                    .ok()
            },
            || self.describe(&name),
        );
        TestNamespace { bed: self, name }
    }

    /// Makes `kubectl exec` into pods of `namespace` run on this host with `PGDATABASE=database`
    /// (plus the bed's PGHOST/PGPORT/PGUSER): a "database pod" of that namespace.
    pub fn bind_exec(&self, namespace: &str, database: &str) {
        let env = |k: &str| self.var(k).unwrap_or_default().to_string();
        let path = format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            env("PG_BIN")
        );
        self.apply(&format!(
            r#"apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterExec
metadata: {{name: exec-{namespace}}}
spec:
  selector: {{matchNamespaces: ["{namespace}"]}}
  execs:
    - local:
        workDir: /tmp
        envs:
          - {{name: PGDATABASE, value: "{database}"}}
          - {{name: PGHOST, value: "{host}"}}
          - {{name: PGPORT, value: "{port}"}}
          - {{name: PGUSER, value: "{user}"}}
          - {{name: PATH, value: "{path}"}}
"#,
            host = env("PGHOST"),
            port = env("PGPORT"),
            user = env("PGUSER"),
        ));
    }

    /// Removes the exec binding of `namespace`.
    pub fn unbind_exec(&self, namespace: &str) {
        let _ = self.kubectl(&[
            "delete",
            "clusterexec",
            &format!("exec-{namespace}"),
            "--ignore-not-found",
        ]);
    }

    /// What a namespace holds, for failure messages.
    pub fn describe(&self, namespace: &str) -> String {
        let objects = self
            .kubectl(&[
                "-n",
                namespace,
                "get",
                "all,pvc,volumesnapshot,secret,configmap",
                "-o",
                "wide",
            ])
            .unwrap_or_else(|e| e);
        let events = self
            .kubectl(&["-n", namespace, "get", "events", "--sort-by=.lastTimestamp"])
            .unwrap_or_else(|e| e);
        format!("--- objects in {namespace} ---\n{objects}\n--- events ---\n{events}")
    }

    /// Polls `probe` every 500 ms until it returns Some; on timeout panics with `what` and `context()`.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut() -> Option<T>,
        context: impl Fn() -> String,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = probe() {
                return value;
            }
            if Instant::now() >= deadline {
                panic!(
                    "gave up after {timeout:?} waiting for {what}\n{}",
                    context()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits until `kind/name` in `namespace` reports `status.phase == phase` (a pod Running,
    /// a PVC Bound), printing the namespace when it gives up.
    pub fn wait_for_phase(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
        phase: &str,
        timeout: Duration,
    ) {
        self.wait_until(
            &format!("{kind} {namespace}/{name} to be {phase}"),
            timeout,
            || {
                (self
                    .jsonpath(&["-n", namespace, kind, name], "{.status.phase}")
                    .as_deref()
                    == Some(phase))
                .then_some(())
            },
            || self.describe(namespace),
        );
    }

    /// Waits until every named CRD reports `Established=True`. Polls instead of `kubectl wait`,
    /// which fails at once on a CRD whose status has no conditions yet (issue 19).
    pub fn wait_established(&self, crds: &[&str]) {
        for crd in crds {
            self.wait_until(
                &format!("CRD {crd} to be Established"),
                Duration::from_secs(60),
                || {
                    (self
                        .jsonpath(
                            &["crd", crd],
                            r#"{.status.conditions[?(@.type=="Established")].status}"#,
                        )
                        .as_deref()
                        == Some("True"))
                    .then_some(())
                },
                || {
                    self.kubectl(&["get", "crd", crd, "-o", "yaml"])
                        .unwrap_or_else(|e| e)
                },
            );
        }
    }

    /// A jsonpath of one object, or None when it (or the field) is absent.
    pub fn jsonpath(&self, args: &[&str], path: &str) -> Option<String> {
        let template = format!("jsonpath={path}");
        let mut full: Vec<&str> = vec!["get"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["-o", &template]);
        self.kubectl(&full)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }
}

/// A namespace that is deleted (without waiting) when the test ends.
pub struct TestNamespace<'a> {
    bed: &'a Bed,
    /// Its name.
    pub name: String,
}

impl Drop for TestNamespace<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.bed.describe(&self.name));
        }
        self.bed.unbind_exec(&self.name);
        let _ = self.bed.kubectl(&[
            "delete",
            "namespace",
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ]);
    }
}

/// `<prefix>-<8 random hex>`: unique per test run.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mixed = (nanos as u64)
        ^ (std::process::id() as u64).rotate_left(32)
        ^ next_counter().wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{prefix}-{:08x}", mixed as u32)
}

fn next_counter() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    COUNTER.fetch_add(1, Ordering::SeqCst)
}

/// The `status` of the `kind` object `name`, or null when it cannot be read.
pub fn status_of(bed: &Bed, kind: &str, name: &str) -> serde_json::Value {
    bed.kubectl(&["get", kind, name, "-o", "json"])
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .map(|object| object["status"].clone())
        .unwrap_or(serde_json::Value::Null)
}
