//! Database worker pods as objects (pure): a pod in the operator's namespace that runs
//! `rewind database dump|load`, execing into one database pod with its own service-account
//! token, and the Role and RoleBinding in the database's namespace that let exactly that
//! token exec into exactly that pod. docs/volumes.md ("Database workers") says how they are run.
//!
//! Like the movers: no client, no clock, deterministic names (`rewind-dump-…`, `rewind-load-…`),
//! the mover labels (so `apply::remove_all` finds a worker's pod with the movers) and a
//! controller owner reference to the AccountBackup or ProjectRestore (cluster-scoped, so it may
//! own the Role and RoleBinding in a tenant's namespace too).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{Value, json};

use super::error::MoverError;
use super::names::{MoverRole, labels, mover_name};
use super::pod::{KEY_DIR, KEY_FILE, MOVER_BINARY, TERMINATION_LOG, metadata};
use super::settings::MoverSettings;
use crate::api::DATABASE_POD_ANNOTATION;
use crate::archive::layout::{DUMP_OF_BACKUP_METADATA, DUMP_POD_METADATA, VOLUME_PROJECT_METADATA};

/// The user a worker runs as: not root, no capabilities (Pod Security `restricted`). It reads
/// nothing but its key and token, writes nothing but its termination message.
pub const WORKER_UID: i64 = 65532;

/// The database pod a worker execs into.
#[derive(Clone, Copy, Debug)]
pub struct DatabasePod<'a> {
    /// Its namespace: the project (dump) or the restore's target namespace (load).
    pub namespace: &'a str,
    /// The pod.
    pub pod: &'a str,
    /// Its container, when the pod names one.
    pub container: Option<&'a str>,
    /// The dump or restore command (`sh -c SCRIPT`).
    pub command: &'a [String],
}

/// What one worker does.
#[derive(Clone, Copy, Debug)]
pub enum WorkerJob<'a> {
    /// Dump the pod into a new snapshot tied to the backup.
    Dump {
        /// The project the dump belongs to (its stream is named by it).
        project: &'a str,
    },
    /// Load a dump into the pod.
    Load {
        /// The project the dump came from (the label of the worker's objects).
        project: &'a str,
        /// The snapshot holding the dump.
        snapshot: &'a str,
        /// Its stream.
        stream: &'a str,
        /// Its size as recorded.
        bytes: u64,
        /// Its SHA-256 as recorded.
        sha256: &'a str,
    },
}

/// One worker of one operation.
pub struct WorkerSpec<'a> {
    /// The AccountBackup's or ProjectRestore's UID.
    pub operation_uid: &'a str,
    /// That object, as the owner of every object (controller: true).
    pub owner: &'a OwnerReference,
    /// The database pod.
    pub database: DatabasePod<'a>,
    /// Dump or load.
    pub job: WorkerJob<'a>,
    /// How long the command in the database pod may take (the dump timeout).
    pub command_timeout: Duration,
}

/// The objects of one worker, in the order they are created.
#[derive(Clone, Debug, PartialEq)]
pub struct Worker {
    /// The name of every object below.
    pub name: String,
    /// The database's namespace, where the Role and RoleBinding live.
    pub database_namespace: String,
    /// `get` on the one pod and exec into it.
    pub role: Value,
    /// That Role, bound to the worker ServiceAccount in the operator's namespace.
    pub binding: Value,
    /// The pod running `rewind database …`.
    pub pod: Value,
}

/// The worker of one database pod (pure). `time_left` is the operation's time before its
/// deadline: the pod's `activeDeadlineSeconds`, and the command's timeout when shorter.
pub fn worker(
    settings: &MoverSettings,
    spec: &WorkerSpec<'_>,
    time_left: Duration,
) -> Result<Worker, MoverError> {
    let WorkerSpec {
        operation_uid,
        owner,
        database,
        job,
        command_timeout,
    } = *spec;
    let (role, project) = match job {
        WorkerJob::Dump { project } => (MoverRole::Dump, project),
        WorkerJob::Load { project, .. } => (MoverRole::Load, project),
    };
    let deadline = super::pod::active_deadline_seconds(time_left).ok_or_else(|| {
        MoverError::NoTimeLeftForDatabase {
            namespace: database.namespace.into(),
            pod: database.pod.into(),
        }
    })?;
    let name = mover_name(role, operation_uid, database.namespace, database.pod);
    let labels = labels(role, operation_uid, project);
    let annotations = json!({DATABASE_POD_ANNOTATION: database.pod});
    let timeout_seconds = command_timeout.min(time_left).as_secs().max(1);
    let pod = worker_pod(
        settings,
        metadata(
            &name,
            Some(&settings.namespace),
            &labels,
            &annotations,
            owner,
        ),
        command(settings, spec, operation_uid, timeout_seconds),
        deadline,
    );
    let role_object = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(&name, Some(database.namespace), &labels, &annotations, owner),
        "rules": [
            // Exec looks the pod up first; this pod only.
            {"apiGroups": [""], "resources": ["pods"], "resourceNames": [database.pod], "verbs": ["get"]},
            // The exec itself: `create`, and `get` for API servers that authorize the websocket
            // upgrade as a GET. This pod only.
            {"apiGroups": [""], "resources": ["pods/exec"], "resourceNames": [database.pod], "verbs": ["get", "create"]},
        ],
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(&name, Some(database.namespace), &labels, &annotations, owner),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{
            "kind": "ServiceAccount",
            "name": settings.worker_service_account,
            "namespace": settings.namespace,
        }],
    });
    Ok(Worker {
        name,
        database_namespace: database.namespace.to_string(),
        role: role_object,
        binding,
        pod,
    })
}

/// `rewind database … dump|load …` of a worker (pure). A dump's snapshot names the backup under
/// its own metadata key, never `backup-uid` (see [`DUMP_OF_BACKUP_METADATA`]).
fn command(
    settings: &MoverSettings,
    spec: &WorkerSpec<'_>,
    operation_uid: &str,
    timeout_seconds: u64,
) -> Vec<String> {
    let database = spec.database;
    let mut command: Vec<String> = vec![
        MOVER_BINARY.into(),
        "database".into(),
        "--repo".into(),
        settings.repository.clone(),
        "--key-file".into(),
        format!("{KEY_DIR}/{KEY_FILE}"),
        "--summary-file".into(),
        TERMINATION_LOG.into(),
        "--timeout-seconds".into(),
        timeout_seconds.to_string(),
    ];
    match spec.job {
        WorkerJob::Dump { project } => {
            command.push("dump".into());
            command.extend(["--project".into(), project.to_string()]);
            for (key, value) in [
                (DUMP_OF_BACKUP_METADATA, operation_uid),
                (VOLUME_PROJECT_METADATA, project),
                (DUMP_POD_METADATA, database.pod),
            ] {
                command.push("--snapshot-meta".into());
                command.push(format!("{key}={value}"));
            }
        }
        WorkerJob::Load {
            snapshot,
            stream,
            bytes,
            sha256,
            ..
        } => {
            command.push("load".into());
            for (flag, value) in [
                ("--snapshot", snapshot.to_string()),
                ("--stream", stream.to_string()),
                ("--bytes", bytes.to_string()),
                ("--sha256", sha256.to_string()),
            ] {
                command.push(flag.into());
                command.push(value);
            }
        }
    }
    command.extend([
        "--namespace".into(),
        database.namespace.to_string(),
        "--pod".into(),
        database.pod.to_string(),
    ]);
    if let Some(container) = database.container {
        command.extend(["--container".into(), container.to_string()]);
    }
    command.push("--".into());
    command.extend(database.command.iter().cloned());
    command
}

/// The worker pod (pure): Pod Security `restricted`, the worker ServiceAccount's token, the
/// repository key, the mover settings' image, resources and placement.
fn worker_pod(
    settings: &MoverSettings,
    metadata: Value,
    command: Vec<String>,
    active_deadline_seconds: i64,
) -> Value {
    let mut container = json!({
        "name": "worker",
        "image": settings.image,
        "command": command,
        // A failed worker's stderr becomes its termination message: the operator reports why
        // without reading logs.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "privileged": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {"requests": settings.resources.requests, "limits": settings.resources.limits},
        "volumeMounts": [{"name": "repository-key", "mountPath": KEY_DIR, "readOnly": true}],
    });
    if let Some(policy) = &settings.image_pull_policy {
        container["imagePullPolicy"] = Value::String(policy.clone());
    }
    if let Some(secret) = &settings.repository_env_secret {
        container["envFrom"] = json!([{"secretRef": {"name": secret}}]);
    }
    let mut spec = json!({
        "restartPolicy": "Never",
        "activeDeadlineSeconds": active_deadline_seconds,
        // The worker execs into its database pod: it needs its token, and its account may do
        // nothing but that (the Role beside the pod).
        "serviceAccountName": settings.worker_service_account,
        "automountServiceAccountToken": true,
        "enableServiceLinks": false,
        "securityContext": {
            "runAsUser": WORKER_UID, "runAsGroup": WORKER_UID, "runAsNonRoot": true,
            // The key file is given to the worker's group (0440): nothing else runs in the pod.
            "fsGroup": WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "repository-key", "secret": {
                "secretName": settings.key_secret,
                "items": [{"key": settings.key_secret_key, "path": KEY_FILE}],
                "defaultMode": 0o440,
            }},
        ],
    });
    if let Some(address) = &settings.worker_api_address {
        // Only for clusters whose pods cannot use the `kubernetes` Service: the name the API
        // server's certificate holds, resolved to an address pods reach.
        spec["hostAliases"] = json!([{"ip": address.ip, "hostnames": ["kubernetes.default.svc"]}]);
        spec["containers"][0]["env"] = json!([
            {"name": "KUBERNETES_SERVICE_HOST", "value": "kubernetes.default.svc"},
            {"name": "KUBERNETES_SERVICE_PORT", "value": address.port.to_string()},
        ]);
    }
    if !settings.node_selector.is_empty() {
        spec["nodeSelector"] = json!(settings.node_selector);
    }
    if !settings.tolerations.is_empty() {
        spec["tolerations"] = Value::Array(settings.tolerations.clone());
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

/// What a dump worker's summary says it stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpSummary {
    /// The snapshot it committed.
    pub snapshot: String,
    /// The dump's stream in it.
    pub stream: String,
    /// Bytes of the dump.
    pub bytes: u64,
    /// SHA-256 of the dump, hex.
    pub sha256: String,
    /// Bytes the repository added.
    pub stored_bytes: u64,
}

/// The dump a worker's JSON summary (its termination message) describes (pure).
pub fn dump_summary(summary: &str) -> Result<DumpSummary, String> {
    let json: Value = serde_json::from_str(summary.lines().last().unwrap_or(""))
        .map_err(|err| format!("the worker's summary is not JSON ({err}): {summary:.200}"))?;
    let text = |field: &str| {
        json[field]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("the worker's summary has no {field}: {summary:.200}"))
    };
    Ok(DumpSummary {
        snapshot: text("snapshot")?,
        stream: text("stream")?,
        sha256: text("sha256")?,
        bytes: json["bytes"].as_u64().unwrap_or(0),
        stored_bytes: json["storedBytes"].as_u64().unwrap_or(0),
    })
}

/// A worker's failure in the words of its item: the mover state's message, about a worker.
pub fn worker_failure(reason: &str) -> String {
    reason.replacen("the mover pod", "the worker pod", 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MOVER_LABEL, OPERATION_UID_LABEL};
    use crate::mover::pod::tests::{owner, settings};
    use crate::mover::settings::{ApiAddress, MoverAccess};

    fn command_words() -> Vec<String> {
        vec!["sh".into(), "-c".into(), "exec pg_dump".into()]
    }

    fn dump_worker(settings: &MoverSettings, time_left: Duration) -> Result<Worker, MoverError> {
        let owner = owner();
        let command = command_words();
        worker(
            settings,
            &WorkerSpec {
                operation_uid: "uid-1",
                owner: &owner,
                database: DatabasePod {
                    namespace: "shop",
                    pod: "db-0",
                    container: Some("postgres"),
                    command: &command,
                },
                job: WorkerJob::Dump { project: "shop" },
                command_timeout: Duration::from_secs(3600),
            },
            time_left,
        )
    }

    fn load_worker() -> Worker {
        let owner = owner();
        let command = vec!["sh".into(), "-c".into(), "exec pg_restore".into()];
        worker(
            &settings(MoverAccess::AnyOwner),
            &WorkerSpec {
                operation_uid: "uid-2",
                owner: &owner,
                database: DatabasePod {
                    namespace: "shop-restored",
                    pod: "db-0",
                    container: None,
                    command: &command,
                },
                job: WorkerJob::Load {
                    project: "shop",
                    snapshot: "ab12",
                    stream: "projects/shop/databases/db-0.dump",
                    bytes: 42,
                    sha256: "ff",
                },
                command_timeout: Duration::from_secs(3600),
            },
            Duration::from_secs(600),
        )
        .expect("a worker")
    }

    fn words(pod: &Value) -> Vec<String> {
        pod["spec"]["containers"][0]["command"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect()
    }

    #[test]
    fn a_worker_passes_pod_security_restricted() {
        let worker = dump_worker(&settings(MoverAccess::AnyOwner), Duration::from_secs(60))
            .expect("a worker");
        let spec = &worker.pod["spec"];
        let container = &spec["containers"][0];
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
        assert_eq!(spec["securityContext"]["runAsUser"], WORKER_UID);
        assert_eq!(
            spec["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(
            container["securityContext"]["capabilities"],
            json!({"drop": ["ALL"]})
        );
        assert_eq!(
            container["securityContext"]["allowPrivilegeEscalation"],
            false
        );
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(spec["volumes"][0]["secret"]["defaultMode"], 0o440);
        assert!(
            spec["volumes"]
                .as_array()
                .is_some_and(|v| v.iter().all(|v| v.get("hostPath").is_none()))
        );
    }

    #[test]
    fn a_worker_runs_in_the_operators_namespace_with_the_worker_account_and_the_mover_settings() {
        let worker = dump_worker(&settings(MoverAccess::AnyOwner), Duration::from_secs(60))
            .expect("a worker");
        let pod = &worker.pod;
        assert_eq!(pod["metadata"]["namespace"], "rewind-system");
        assert_eq!(pod["spec"]["serviceAccountName"], "rewind-worker");
        assert_eq!(pod["spec"]["automountServiceAccountToken"], true);
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["activeDeadlineSeconds"], 60);
        let container = &pod["spec"]["containers"][0];
        assert_eq!(container["resources"]["limits"]["memory"], "512Mi");
        assert_eq!(container["imagePullPolicy"], "Never");
        assert_eq!(container["envFrom"][0]["secretRef"]["name"], "rewind-s3");
        assert_eq!(
            pod["spec"]["nodeSelector"]["rewind.dev/testbed-node"],
            "real"
        );
        assert!(pod["spec"].get("hostAliases").is_none());
        assert_eq!(pod["metadata"]["labels"][MOVER_LABEL], "dump");
        assert_eq!(pod["metadata"]["labels"][OPERATION_UID_LABEL], "uid-1");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert!(worker.name.starts_with("rewind-dump-"));
    }

    #[test]
    fn a_dump_worker_writes_a_snapshot_of_its_own_tied_to_the_backup() {
        let worker = dump_worker(&settings(MoverAccess::AnyOwner), Duration::from_secs(7200))
            .expect("a worker");
        let words = words(&worker.pod);
        let at = words.iter().position(|w| w == "dump").expect("dump");
        assert_eq!(
            words[..at],
            [
                MOVER_BINARY,
                "database",
                "--repo",
                "s3://bucket/prefix",
                "--key-file",
                "/var/run/rewind/repository/key",
                "--summary-file",
                TERMINATION_LOG,
                "--timeout-seconds",
                "3600"
            ]
        );
        assert!(words.contains(&"dump-of-backup-uid=uid-1".to_string()));
        assert!(words.contains(&"project=shop".to_string()));
        assert!(words.contains(&"pod=db-0".to_string()));
        let backup_key = format!("{}=", crate::archive::layout::BACKUP_UID_METADATA);
        assert!(
            !words.iter().any(|w| w.starts_with(&backup_key)),
            "{words:?}"
        );
        let tail: Vec<&str> = words[words.len() - 10..words.len() - 1]
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(
            tail,
            [
                "--namespace",
                "shop",
                "--pod",
                "db-0",
                "--container",
                "postgres",
                "--",
                "sh",
                "-c"
            ]
        );
        assert_eq!(words.last().map(String::as_str), Some("exec pg_dump"));
    }

    #[test]
    fn a_load_worker_reads_the_recorded_snapshot_and_checks_size_and_checksum() {
        let worker = load_worker();
        let words = words(&worker.pod).join(" ");
        assert!(
            words.contains(
                "load --snapshot ab12 --stream projects/shop/databases/db-0.dump --bytes 42 --sha256 ff --namespace shop-restored --pod db-0 -- sh -c exec pg_restore"
            ),
            "{words}"
        );
        assert!(worker.name.starts_with("rewind-load-"));
        assert_eq!(worker.database_namespace, "shop-restored");
        assert_eq!(worker.pod["metadata"]["labels"][MOVER_LABEL], "load");
    }

    #[test]
    fn the_workers_role_allows_exec_into_its_one_database_pod_only() {
        let worker = load_worker();
        assert_eq!(worker.role["metadata"]["namespace"], "shop-restored");
        assert_eq!(worker.role["metadata"]["name"], worker.name);
        let rules = worker.role["rules"].as_array().expect("rules");
        for rule in rules {
            assert_eq!(rule["resourceNames"], json!(["db-0"]), "{rule}");
            assert!(
                !rule["verbs"].to_string().contains("delete")
                    && !rule["verbs"].to_string().contains('*'),
                "{rule}"
            );
        }
        assert!(
            rules.iter().any(|r| r["resources"] == json!(["pods/exec"])
                && r["verbs"].to_string().contains("create"))
        );
        assert_eq!(
            worker.binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "rewind-worker", "namespace": "rewind-system"}])
        );
        assert_eq!(worker.binding["roleRef"]["name"], worker.name);
        for object in [&worker.role, &worker.binding] {
            assert_eq!(
                object["metadata"]["ownerReferences"][0]["kind"],
                "AccountBackup"
            );
            assert_eq!(object["metadata"]["labels"][OPERATION_UID_LABEL], "uid-2");
        }
    }

    #[test]
    fn a_worker_name_is_the_same_after_a_restart_and_differs_per_pod_and_operation() {
        let settings = settings(MoverAccess::AnyOwner);
        let first = dump_worker(&settings, Duration::from_secs(60)).expect("a worker");
        let again = dump_worker(&settings, Duration::from_secs(30)).expect("a worker");
        assert_eq!(first.name, again.name);
        assert_ne!(first.name, load_worker().name);
        assert_ne!(
            first.name,
            mover_name(MoverRole::Dump, "uid-1", "shop", "db-1")
        );
    }

    #[test]
    fn the_command_timeout_never_outlives_the_operation() {
        let worker = dump_worker(&settings(MoverAccess::AnyOwner), Duration::from_secs(90))
            .expect("a worker");
        let words = words(&worker.pod);
        let at = words
            .iter()
            .position(|w| w == "--timeout-seconds")
            .expect("flag");
        assert_eq!(words[at + 1], "90");
        let out_of_time = dump_worker(&settings(MoverAccess::AnyOwner), Duration::from_millis(300));
        assert!(matches!(
            out_of_time,
            Err(MoverError::NoTimeLeftForDatabase { .. })
        ));
    }

    #[test]
    fn on_a_cluster_without_service_routing_workers_reach_the_api_server_at_the_given_address() {
        let mut settings = settings(MoverAccess::AnyOwner);
        settings.worker_api_address = Some(ApiAddress {
            ip: "10.88.3.1".into(),
            port: 6443,
        });
        let worker = dump_worker(&settings, Duration::from_secs(60)).expect("a worker");
        let spec = &worker.pod["spec"];
        assert_eq!(
            spec["hostAliases"],
            json!([{"ip": "10.88.3.1", "hostnames": ["kubernetes.default.svc"]}])
        );
        assert_eq!(
            spec["containers"][0]["env"],
            json!([
                {"name": "KUBERNETES_SERVICE_HOST", "value": "kubernetes.default.svc"},
                {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"},
            ])
        );
    }

    #[test]
    fn a_dump_workers_summary_gives_the_snapshot_stream_size_and_checksum() {
        let summary = dump_summary(
            r#"{"snapshot":"ab12","stream":"projects/shop/databases/db-0.dump","bytes":42,"sha256":"ff","storedBytes":30,"seconds":1.5}"#,
        )
        .expect("a summary");
        assert_eq!(
            summary,
            DumpSummary {
                snapshot: "ab12".into(),
                stream: "projects/shop/databases/db-0.dump".into(),
                bytes: 42,
                sha256: "ff".into(),
                stored_bytes: 30,
            }
        );
        assert!(dump_summary("Error: x").is_err());
        assert!(
            dump_summary(r#"{"snapshot":"ab12","stream":"s"}"#)
                .unwrap_err()
                .contains("sha256")
        );
        assert_eq!(
            worker_failure("the mover pod failed: exit 3"),
            "the worker pod failed: exit 3"
        );
    }

    #[test]
    fn worker_objects_are_valid_kubernetes_objects() {
        let worker = load_worker();
        let _: k8s_openapi::api::core::v1::Pod = serde_json::from_value(worker.pod).expect("a Pod");
        let _: k8s_openapi::api::rbac::v1::Role =
            serde_json::from_value(worker.role).expect("a Role");
        let _: k8s_openapi::api::rbac::v1::RoleBinding =
            serde_json::from_value(worker.binding).expect("a RoleBinding");
    }
}
