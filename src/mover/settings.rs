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
    /// The ServiceAccount (in `namespace`) database worker pods run as: the subject of the
    /// Role each worker gets in its database's namespace, and nothing else.
    pub worker_service_account: String,
    /// How worker pods reach the API server when the `kubernetes` Service does not route from
    /// pods (clusters without kube-proxy, such as the test bed); None on ordinary clusters.
    pub worker_api_address: Option<ApiAddress>,
}

/// The API server as worker pods reach it: an address on the nodes' network whose certificate
/// names `kubernetes.default.svc` (a `hostAliases` entry maps that name to `ip`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiAddress {
    /// An IP address pods can reach.
    pub ip: String,
    /// The API server's port there.
    pub port: u16,
}

/// Whether this operator copies volumes into the repository, and with what.
#[derive(Clone, Debug, PartialEq)]
pub enum Movers {
    /// Movers run with these settings, at most `parallel` per backup at once.
    On {
        /// The pods' settings.
        settings: Box<MoverSettings>,
        /// Volumes moved at the same time by one operation.
        parallel: usize,
    },
    /// No mover can run; why, for the warning each backup with volumes carries.
    Off(String),
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

/// Why mover settings cannot be built from the operator's flags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A `key=value` list has an entry without `=` or with an empty key.
    #[error("{flag}: {entry:?} is not key=value (write e.g. cpu=100m,memory=128Mi)")]
    NotKeyValue {
        /// The flag.
        flag: &'static str,
        /// The entry.
        entry: String,
    },
    /// `--mover-access` is neither `any-owner` nor `single-user:UID:GID`.
    #[error(
        "--mover-access {0:?}: use any-owner or single-user:UID:GID (e.g. single-user:1000:1000)"
    )]
    Access(String),
    /// `--worker-api-address` is not `IP:PORT`.
    #[error("--worker-api-address {0:?}: write IP:PORT (e.g. 10.88.0.1:6443)")]
    ApiAddress(String),
    /// Movers cannot reach a file:// repository.
    #[error(
        "--mover-repository {0:?}: mover pods cannot reach a file:// repository; use an object store (s3://, gs://, az://)"
    )]
    FileRepository(String),
}

impl SettingsError {
    /// A static label for logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::NotKeyValue { .. } => "NotKeyValue",
            Self::Access(_) => "Access",
            Self::FileRepository(_) => "FileRepository",
            Self::ApiAddress(_) => "ApiAddress",
        }
    }
}

/// `key=value,key=value` (pure); empty entries are skipped.
pub fn key_values(
    flag: &'static str,
    text: &str,
) -> Result<BTreeMap<String, String>, SettingsError> {
    let mut map = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match entry.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                map.insert(key.trim().to_string(), value.trim().to_string());
            }
            _ => {
                return Err(SettingsError::NotKeyValue {
                    flag,
                    entry: entry.to_string(),
                });
            }
        }
    }
    Ok(map)
}

/// `any-owner` or `single-user:UID:GID` (pure).
pub fn access(text: &str) -> Result<MoverAccess, SettingsError> {
    let refused = || SettingsError::Access(text.to_string());
    match text.trim() {
        "any-owner" => Ok(MoverAccess::AnyOwner),
        other => {
            let rest = other.strip_prefix("single-user:").ok_or_else(refused)?;
            let (uid, gid) = rest.split_once(':').ok_or_else(refused)?;
            let uid: i64 = uid.parse().map_err(|_| refused())?;
            let gid: i64 = gid.parse().map_err(|_| refused())?;
            // Pod Security restricted refuses root; a "single user" that is root is any-owner.
            if uid <= 0 || gid < 0 {
                return Err(refused());
            }
            Ok(MoverAccess::SingleUser { uid, gid })
        }
    }
}

/// `IP:PORT` of the API server as worker pods reach it (pure).
pub fn api_address(text: &str) -> Result<ApiAddress, SettingsError> {
    let refused = || SettingsError::ApiAddress(text.to_string());
    let (ip, port) = text.trim().rsplit_once(':').ok_or_else(refused)?;
    let ip: std::net::IpAddr = ip.trim_matches(['[', ']']).parse().map_err(|_| refused())?;
    let port: u16 = port.parse().map_err(|_| refused())?;
    Ok(ApiAddress {
        ip: ip.to_string(),
        port,
    })
}

/// Tolerations of every taint with one of these keys (pure).
pub fn tolerations(text: &str) -> Vec<Value> {
    text.split(',')
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .map(|key| serde_json::json!({"key": key, "operator": "Exists"}))
        .collect()
}

/// Whether movers can reach a repository at this URL (pure): not on the operator's own disk.
pub fn reachable_by_movers(url: &str) -> Result<(), SettingsError> {
    if url.starts_with("file://") || url.starts_with("memory://") {
        return Err(SettingsError::FileRepository(url.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_lists_are_read_and_a_broken_entry_is_named() {
        let map = key_values("--mover-requests", "cpu=100m, memory=128Mi,").expect("valid");
        assert_eq!(map["cpu"], "100m");
        assert_eq!(map["memory"], "128Mi");
        assert!(key_values("--x", "").expect("empty").is_empty());
        let err = key_values("--mover-limits", "memory").expect_err("no =");
        assert!(err.to_string().contains("\"memory\""), "{err}");
        assert_eq!(err.category(), "NotKeyValue");
        assert!(key_values("--x", "=1").is_err());
    }

    #[test]
    fn access_is_any_owner_or_one_non_root_user() {
        assert_eq!(access("any-owner"), Ok(MoverAccess::AnyOwner));
        assert_eq!(
            access("single-user:1000:2000"),
            Ok(MoverAccess::SingleUser {
                uid: 1000,
                gid: 2000
            })
        );
        for bad in [
            "root",
            "single-user:0:0",
            "single-user:1000",
            "single-user:a:b",
            "",
        ] {
            assert!(access(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_worker_api_address_is_an_ip_and_a_port() {
        assert_eq!(
            api_address("10.88.3.1:6443"),
            Ok(ApiAddress {
                ip: "10.88.3.1".into(),
                port: 6443
            })
        );
        for bad in ["10.88.3.1", "apiserver:6443", "10.88.3.1:http", ""] {
            let err = api_address(bad).expect_err(bad);
            assert_eq!(err.category(), "ApiAddress");
        }
    }

    #[test]
    fn tolerations_tolerate_every_effect_of_each_key() {
        assert_eq!(
            tolerations("rewind.dev/real-node, gpu"),
            vec![
                serde_json::json!({"key": "rewind.dev/real-node", "operator": "Exists"}),
                serde_json::json!({"key": "gpu", "operator": "Exists"}),
            ]
        );
        assert!(tolerations("").is_empty());
    }

    #[test]
    fn movers_never_get_a_repository_on_the_operators_own_disk() {
        assert!(reachable_by_movers("file:///var/lib/rewind").is_err());
        assert!(reachable_by_movers("memory://").is_err());
        assert!(reachable_by_movers("s3://bucket/prefix").is_ok());
    }
}
