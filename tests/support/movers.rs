//! Volume copies as the suites drive them: an operator with an S3 repository, mover pods and
//! database workers on the real node, a volume's files written from the host, waits for an operation to end, and the
//! mover objects an operation may have left behind.

use std::os::unix::fs::{PermissionsExt, chown};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::operator::{Launch, Operator, new_key_hex};
use super::real_node::{RealNode, rewind_image};
use super::{Bed, TestNamespace, status_of, unique};

/// How long a backup or restore with movers may take in these suites.
pub const WAIT: Duration = Duration::from_secs(240);

/// Creates `path` in a volume (a file with `contents`, or a directory), owned by `uid`, `mode`.
pub fn owned(path: &Path, uid: u32, mode: u32, contents: Option<&str>) {
    match contents {
        Some(text) => std::fs::write(path, text).expect("a file in the volume"),
        None => std::fs::create_dir(path).expect("a directory in the volume"),
    }
    chown(path, Some(uid), Some(uid)).expect("chown");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The host directory holding the files of `pvc` (the bed's CSI driver keeps them there).
pub fn volume_dir(bed: &Bed, state_dir: &str, namespace: &str, pvc: &str) -> std::path::PathBuf {
    let volume = bed
        .jsonpath(&["-n", namespace, "pvc", pvc], "{.spec.volumeName}")
        .expect("a bound PVC names its volume");
    let handle = bed
        .jsonpath(&["pv", &volume], "{.spec.csi.volumeHandle}")
        .expect("volume handle");
    Path::new(state_dir).join(handle)
}

/// Waits until `kind`/`name` is Completed, PartiallyFailed or Failed; its status.
pub fn wait_phase(bed: &Bed, operator: &Operator, kind: &str, name: &str) -> Value {
    bed.wait_until(
        &format!("{kind} {name} to finish"),
        WAIT,
        || {
            let status = status_of(bed, kind, name);
            matches!(
                status["phase"].as_str(),
                Some("Completed" | "PartiallyFailed" | "Failed")
            )
            .then_some(status)
        },
        || format!("{}\n{}", status_of(bed, kind, name), operator.log_tail()),
    )
}

/// Waits until a pod labelled `rewind.dev/mover=<role>` (`backup`, `restore`, `dump`, `load`)
/// runs in the operator's namespace `namespace`; its `pod/<name>`.
pub fn running_mover(bed: &Bed, operator: &Operator, namespace: &str, role: &str) -> String {
    let selector = format!("rewind.dev/mover={role}");
    bed.wait_until(
        &format!("a {role} mover or worker pod to run"),
        WAIT,
        || {
            let names = bed
                .kubectl(&[
                    "-n",
                    namespace,
                    "get",
                    "pods",
                    "-l",
                    &selector,
                    "--field-selector=status.phase=Running",
                    "-o",
                    "name",
                ])
                .unwrap_or_default();
            let name = names.trim().to_string();
            (!name.is_empty()).then_some(name)
        },
        || {
            format!(
                "{}
{}",
                bed.describe(namespace),
                operator.log_tail()
            )
        },
    )
}

/// Mover pods, PVCs and snapshots left in `namespace` and mover contents anywhere, by name.
pub fn leftovers(bed: &Bed, namespace: &str) -> String {
    let mut found = String::new();
    for kind in ["pods", "pvc", "volumesnapshots"] {
        found += &bed
            .kubectl(&[
                "-n",
                namespace,
                "get",
                kind,
                "-l",
                "rewind.dev/mover",
                "-o",
                "name",
            ])
            .unwrap_or_default();
    }
    found += &bed
        .kubectl(&[
            "get",
            "volumesnapshotcontents",
            "-l",
            "rewind.dev/mover",
            "-o",
            "name",
        ])
        .unwrap_or_default();
    found.trim().to_string()
}

/// The API server as the real node's pods reach it (the bed has no kube-proxy, and its
/// certificate names `kubernetes.default.svc`, not the bridge address: docs/testbed.md): the
/// node's InternalIP (the host's address on the pods' bridge) and the API server's port.
pub fn bed_api_address(bed: &Bed, node: &RealNode) -> String {
    let ip = bed
        .jsonpath(
            &["node", &node.name],
            r#"{.status.addresses[?(@.type=="InternalIP")].address}"#,
        )
        .expect("the real node's InternalIP");
    let server = bed.kubectl_ok(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let port = server.rsplit(':').next().unwrap_or_default().trim();
    format!("{ip}:{port}")
}

/// What the volume-copy suites need of the bed; on a cluster without it the test is skipped,
/// loudly.
pub struct CopyBed {
    /// The real node movers run on.
    pub node: RealNode,
    /// The CSI driver's directory on this host (a volume's files are written there).
    pub state_dir: String,
    /// The S3 endpoint, as the operator and the movers reach it.
    pub endpoint: String,
    /// The bed's bucket.
    pub bucket: String,
}

impl CopyBed {
    /// The bed's real node, CSI directory and S3, or None (with a SKIPPED line).
    pub fn of(bed: &Bed) -> Option<CopyBed> {
        Some(CopyBed {
            node: RealNode::of(bed)?,
            state_dir: bed.require("CSI_STATE_DIR", "writing a volume's files from the host")?,
            endpoint: bed.require("S3_ENDPOINT", "the S3 repository movers reach")?,
            bucket: bed.require("S3_BUCKET", "the S3 repository movers reach")?,
        })
    }
}

/// One test at a time: each starts its own operator, and every operator reconciles every
/// AccountBackup on the bed.
pub fn turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An operator with an S3 repository and mover pods on the real node, in its own namespace
/// (Pod Security baseline; the key and the object store's settings in Secrets).
pub struct MoverOperator<'b> {
    /// The operator's namespace (its Secrets, its movers).
    pub op_ns: TestNamespace<'b>,
    /// The repository URL.
    pub repository: String,
    /// The operator's state directory (key file, log).
    pub state: tempfile::TempDir,
    /// The repository's master key.
    pub key_hex: String,
    /// Arguments beyond the repository's (the mover flags).
    pub extra: Vec<String>,
    /// The S3 endpoint, as the operator and the movers reach it.
    pub endpoint: String,
}

impl<'b> MoverOperator<'b> {
    /// An operator on a new repository under `bucket`, with a new key.
    pub fn start(bed: &'b Bed, node: &RealNode, endpoint: &str, bucket: &str) -> Self {
        let repository = format!("s3://{bucket}/{}", unique("copy"));
        Self::start_on(bed, node, endpoint, &repository, &new_key_hex())
    }

    /// Like [`MoverOperator::start`], on a given repository and key (a second cluster's
    /// operator pointed at the first one's repository).
    pub fn start_on(
        bed: &'b Bed,
        node: &RealNode,
        endpoint: &str,
        repository: &str,
        key_hex: &str,
    ) -> Self {
        let image = rewind_image(bed);
        Operator::install_crds(bed);
        let op_ns = bed.namespace("copy-op");
        let op = op_ns.name.clone();
        bed.kubectl_ok(&[
            "label",
            "namespace",
            &op,
            "pod-security.kubernetes.io/enforce=baseline",
        ]);
        let key_hex = key_hex.to_string();
        bed.kubectl_ok(&[
            "-n",
            &op,
            "create",
            "secret",
            "generic",
            "rewind-repository-key",
            &format!("--from-literal=key={key_hex}"),
        ]);
        let aws = |key: &str| bed.var(key).unwrap_or_default().to_string();
        bed.kubectl_ok(&[
            "-n",
            &op,
            "create",
            "secret",
            "generic",
            "rewind-mover-env",
            &format!("--from-literal=AWS_ENDPOINT={endpoint}"),
            "--from-literal=AWS_ALLOW_HTTP=true",
            &format!("--from-literal=AWS_REGION={}", aws("AWS_REGION")),
            &format!(
                "--from-literal=AWS_ACCESS_KEY_ID={}",
                aws("AWS_ACCESS_KEY_ID")
            ),
            &format!(
                "--from-literal=AWS_SECRET_ACCESS_KEY={}",
                aws("AWS_SECRET_ACCESS_KEY")
            ),
        ]);
        // The database workers' account (the chart's `<release>-operator-worker`); it holds no
        // permission: each worker gets a Role for its one database pod.
        bed.kubectl_ok(&["-n", &op, "create", "serviceaccount", "rewind-worker"]);
        let api_address = bed_api_address(bed, node);
        let extra: Vec<String> = [
            "--worker-api-address",
            api_address.as_str(),
            "--mover-image",
            image.as_str(),
            "--mover-image-pull-policy",
            "Never",
            "--mover-env-secret",
            "rewind-mover-env",
            "--mover-node-selector",
            node.label.as_str(),
            "--mover-tolerations",
            node.taint.as_str(),
            "--mover-requests",
            "cpu=50m,memory=64Mi",
            "--mover-limits",
            "memory=256Mi",
            "--snapshot-timeout",
            "60s",
        ]
        .map(String::from)
        .into();
        let state = tempfile::tempdir().expect("temp dir");
        let repository = repository.to_string();
        MoverOperator {
            op_ns,
            repository,
            state,
            key_hex,
            extra,
            endpoint: endpoint.to_string(),
        }
    }

    /// `rewind repo ls` of the operator's repository.
    pub fn repo_ls(&self, bed: &Bed) -> String {
        let listed = std::process::Command::new(env!("CARGO_BIN_EXE_rewind"))
            .args(["repo", "ls", "--repo", &self.repository, "--key-file"])
            .arg(self.state.path().join("key"))
            .envs(bed.envs())
            .env("AWS_ENDPOINT", &self.endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .output()
            .expect("rewind repo ls");
        assert!(
            listed.status.success(),
            "{}",
            String::from_utf8_lossy(&listed.stderr)
        );
        String::from_utf8_lossy(&listed.stdout).to_string()
    }

    pub fn spawn(&self, bed: &Bed) -> Operator {
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let operator = Operator::spawn(
            bed,
            &Launch {
                namespace: &self.op_ns.name,
                identity: &self.op_ns.name,
                state_dir: self.state.path(),
                key_hex: &self.key_hex,
                extra_args: &extra,
                repository: Some(&self.repository),
                env: &[
                    ("AWS_ENDPOINT", self.endpoint.as_str()),
                    ("AWS_ALLOW_HTTP", "true"),
                ],
            },
        );
        bed.wait_until(
            "the operator to be ready",
            WAIT,
            || {
                operator
                    .get("/readyz")
                    .starts_with("HTTP/1.1 200")
                    .then_some(())
            },
            || operator.log_tail(),
        );
        operator
    }
}
