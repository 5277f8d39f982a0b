//! The bed's real node (tests/cluster/node.sh) as the suites use it: pod specs that land on it
//! on purpose, its images (`imagePullPolicy: Never`), readiness waits and `psql` over the
//! kubelet's exec. On a REWIND_E2E_KUBECONFIG cluster there is no real node: `RealNode::of`
//! says so and the test is skipped, loudly.

use std::time::Duration;

use super::Bed;

/// What a test needs of the real node.
pub struct RealNode {
    /// The node's name.
    pub name: String,
    /// `key=value` of the label that selects it.
    pub label: String,
    /// The key of its NoSchedule taint.
    pub taint: String,
    /// A busybox shell image.
    pub shell: String,
    /// A PostgreSQL 15 image.
    pub postgres: String,
}

/// How long a pod on the real node may take to become Ready (image import, initdb).
pub const READY: Duration = Duration::from_secs(120);

impl RealNode {
    /// The real node, or None (with a SKIPPED line) on a cluster without one.
    pub fn of(bed: &Bed) -> Option<RealNode> {
        Some(RealNode {
            name: bed.require("REAL_NODE", "running pods on a real kubelet")?,
            label: bed.require("REAL_NODE_LABEL", "choosing the real node")?,
            taint: bed.require("REAL_NODE_TAINT", "tolerating the real node's taint")?,
            shell: bed.require("IMAGE_SHELL", "a shell image on the real node")?,
            postgres: bed.require("IMAGE_POSTGRES", "a PostgreSQL image on the real node")?,
        })
    }

    /// The pod spec lines that put a pod on the real node (its label, its taint tolerated),
    /// indented by `indent` spaces.
    pub fn placement(&self, indent: usize) -> String {
        let (key, value) = self.label.split_once('=').expect("label key=value");
        let pad = " ".repeat(indent);
        format!(
            "{pad}nodeSelector: {{{key}: {value}}}\n{pad}tolerations: [{{key: {taint}, operator: Exists, effect: NoSchedule}}]\n",
            taint = self.taint
        )
    }

    /// A pod on the real node running `script` in the shell image.
    pub fn shell_pod(
        &self,
        name: &str,
        script: &str,
        extra_spec: &str,
        extra_container: &str,
    ) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{placement}  terminationGracePeriodSeconds: 2\n{extra_spec}  containers:\n  - name: main\n    image: {image}\n    imagePullPolicy: Never\n    command: [sh, -c, {script:?}]\n{extra_container}",
            placement = self.placement(2),
            image = self.shell,
        )
    }

    /// A shell pod on the real node that sleeps, annotated with `annotations` (YAML lines
    /// indented by four spaces): the shape of a database pod with custom commands.
    pub fn annotated_shell_pod(&self, name: &str, annotations: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations:\n{annotations}\nspec:\n{placement}  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: {image}\n    imagePullPolicy: Never\n    command: [sleep, '3600']\n",
            placement = self.placement(2),
            image = self.shell,
        )
    }

    /// A PostgreSQL pod on the real node, annotated with `annotations` (YAML lines indented by
    /// four spaces), its data directory on `volume` (a pod `volumes:` entry named `data`
    /// without its name, e.g. `persistentVolumeClaim: {claimName: pgdata}` or `emptyDir: {}`).
    /// Ready when `pg_isready` answers.
    pub fn postgres_pod(&self, name: &str, annotations: &str, volume: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations:\n{annotations}\nspec:\n{placement}  terminationGracePeriodSeconds: 5\n  securityContext: {{runAsUser: 999, runAsGroup: 999, fsGroup: 999}}\n  containers:\n  - name: postgres\n    image: {image}\n    imagePullPolicy: Never\n    readinessProbe: {{exec: {{command: [pg_isready, -q]}}, periodSeconds: 1}}\n    volumeMounts: [{{name: data, mountPath: /var/lib/postgresql/data}}]\n  volumes: [{{name: data, {volume}}}]\n",
            placement = self.placement(2),
            image = self.postgres,
        )
    }
}

/// The image holding the `rewind` binary these tests were built with, imported into the real
/// node's containerd (`tests/cluster/rewind-image.sh`, cached by the binary's hash): what mover
/// pods run. Built once per test binary.
pub fn rewind_image(bed: &Bed) -> String {
    static IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| import_rewind_image(bed)).clone()
}

/// Builds (or takes from the cache) the `rewind` image and imports it into the real node's
/// containerd now: what [`rewind_image`] does once, again for a bed brought up anew.
pub fn import_rewind_image(bed: &Bed) -> String {
    let script = super::repo_root().join("tests/cluster/rewind-image.sh");
    let output = std::process::Command::new(&script)
        .arg(env!("CARGO_BIN_EXE_rewind"))
        .envs(bed.envs())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{} failed ({}):\n{stdout}{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("IMAGE_REWIND="))
        .unwrap_or_else(|| panic!("rewind-image.sh printed no IMAGE_REWIND=: {stdout}"))
        .to_string()
}

/// Applies `yaml` in `namespace`, panicking with the YAML when the API server refuses it.
pub fn apply_in(bed: &Bed, namespace: &str, yaml: &str) {
    bed.kubectl_with_stdin(
        &["-n", namespace, "apply", "-f", "-"],
        Some(yaml.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("applying in {namespace}: {e}\n{yaml}"));
}

/// Waits until `pod` in `namespace` is Ready, printing the namespace when it gives up.
pub fn wait_ready(bed: &Bed, namespace: &str, pod: &str) {
    bed.wait_until(
        &format!("pod {namespace}/{pod} to be Ready"),
        READY,
        || {
            (bed.jsonpath(
                &["-n", namespace, "pod", pod],
                r#"{.status.conditions[?(@.type=="Ready")].status}"#,
            )
            .as_deref()
                == Some("True"))
            .then_some(())
        },
        || bed.describe(namespace),
    );
}

/// Runs `sql` with `psql` inside `pod` (through the real kubelet's exec) and returns its
/// unaligned, tuples-only output; panics with psql's error.
pub fn psql_in(bed: &Bed, namespace: &str, pod: &str, sql: &str) -> String {
    bed.kubectl_with_stdin(
        &[
            "-n",
            namespace,
            "exec",
            "-i",
            pod,
            "--",
            "psql",
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
        ],
        Some(sql.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("psql in {namespace}/{pod}: {e}\n{sql}"))
    .trim()
    .to_string()
}
