//! What every mover pod gets from the operator's configuration (chart values `movers.*`): the
//! image, where it runs, the repository and its key, resources, and how much privilege it has.

use std::collections::BTreeMap;

use serde_json::Value;

/// The mover settings of one operator.
#[derive(Clone, Debug, PartialEq)]
pub struct MoverSettings {
    /// The image holding `rewind` at [`super::pod::MOVER_BINARY`] (the operator's own image).
    pub image: String,
    /// `imagePullPolicy`; None leaves the cluster's default (the bed needs `Never`).
    pub image_pull_policy: Option<String>,
    /// The operator's namespace: movers, their PVCs and the key Secret live there, never in a
    /// tenant's namespace (a pod there could read the repository's master key).
    pub namespace: String,
    /// The repository URL, as `rewind run --repository` has it.
    pub repository: String,
    /// The Secret (in `namespace`) holding the repository master key.
    pub key_secret: String,
    /// The key of that Secret holding the master key (the chart's is `key`).
    pub key_secret_key: String,
    /// A Secret whose entries become the mover's environment: the object store's endpoint,
    /// region and credentials (`AWS_*`, ...). None for a file:// repository.
    pub repository_env_secret: Option<String>,
    /// Requests and limits of the mover container.
    pub resources: MoverResources,
    /// Where movers may run (`nodeSelector`).
    pub node_selector: BTreeMap<String, String>,
    /// Taints movers tolerate (pod `tolerations` entries).
    pub tolerations: Vec<Value>,
    /// How much a mover may read and write of files that are not its own.
    pub access: MoverAccess,
}

/// Requests and limits (`cpu`, `memory`, ...) as Kubernetes quantities.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MoverResources {
    /// `resources.requests`.
    pub requests: BTreeMap<String, String>,
    /// `resources.limits`.
    pub limits: BTreeMap<String, String>,
}

/// How much privilege a mover runs with. docs/volumes.md ("Who a mover runs as") says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoverAccess {
    /// Root with the few capabilities that reach every file whatever its owner and mode
    /// (backup: `DAC_OVERRIDE` on read-only mounts; restore: `CHOWN`, `DAC_OVERRIDE`, `FOWNER`,
    /// `FSETID`), all others dropped: Pod Security `baseline`. A backup copies every file and a
    /// restore gives each its owner back. The default: a volume's files commonly belong to
    /// several users.
    AnyOwner,
    /// One non-root user, nothing added: Pod Security `restricted`. A backup fails on a file
    /// that user cannot read; a restore writes every file as that user (owners not restored).
    /// For platforms whose volumes each belong to one user.
    SingleUser {
        /// `runAsUser`.
        uid: i64,
        /// `runAsGroup`.
        gid: i64,
    },
}
