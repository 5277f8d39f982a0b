//! The mover pod both roles share (pure): one container running `rewind volume …` against one
//! PVC, the repository key from a Secret, the least privilege its access needs, a deadline.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{Map, Value, json};

use super::settings::{MoverAccess, MoverSettings};

/// Where the `rewind` binary is in the mover image (the release image and the bed's alike).
pub const MOVER_BINARY: &str = "/usr/local/bin/rewind";
/// Where the volume is mounted in the mover.
pub const DATA_DIR: &str = "/data";
/// Where the repository key Secret is mounted.
pub const KEY_DIR: &str = "/var/run/rewind/repository";
/// Where the mover writes its JSON summary: the container's termination message, which the
/// operator reads from the pod's status.
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// The key file's name in [`KEY_DIR`].
pub const KEY_FILE: &str = "key";

/// One mover pod, before the settings are applied.
pub struct PodParts<'a> {
    /// The pod's name (also its PVC's).
    pub name: &'a str,
    /// Its labels (`names::labels`).
    pub labels: Value,
    /// Its annotations (`names::annotations`).
    pub annotations: Value,
    /// The AccountBackup or ProjectRestore it works for (controller: true).
    pub owner: &'a OwnerReference,
    /// The PVC mounted at [`DATA_DIR`].
    pub claim: &'a str,
    /// Whether the PVC is mounted read-only (a backup's source always is).
    pub read_only: bool,
    /// The `rewind volume` subcommand and its arguments (`backup --source /data …`).
    pub command: Vec<String>,
    /// Capabilities added for [`MoverAccess::AnyOwner`] (all others are dropped).
    pub any_owner_capabilities: &'a [&'a str],
    /// `activeDeadlineSeconds` ([`active_deadline_seconds`]).
    pub active_deadline_seconds: i64,
}

/// `activeDeadlineSeconds` for a mover started with `time_left` before its operation's
/// deadline (pure; the caller computes it with `status::time_left` from an injected clock):
/// whole seconds, or None when less than one is left (start no mover, fail the volume).
pub fn active_deadline_seconds(time_left: Duration) -> Option<i64> {
    let seconds = i64::try_from(time_left.as_secs()).unwrap_or(i64::MAX);
    (seconds >= 1).then_some(seconds)
}

/// The object metadata every mover object gets (pure).
pub fn metadata(
    name: &str,
    namespace: Option<&str>,
    labels: &Value,
    annotations: &Value,
    owner: &OwnerReference,
) -> Value {
    let mut metadata = json!({
        "name": name,
        "labels": labels,
        "annotations": annotations,
        "ownerReferences": [owner],
    });
    if let Some(namespace) = namespace {
        metadata["namespace"] = Value::String(namespace.into());
    }
    metadata
}

/// The mover pod (pure).
pub fn mover_pod(settings: &MoverSettings, parts: PodParts<'_>) -> Value {
    let PodParts {
        name,
        labels,
        annotations,
        owner,
        claim,
        read_only,
        command,
        any_owner_capabilities,
        active_deadline_seconds,
    } = parts;
    let key_file = format!("{KEY_DIR}/{KEY_FILE}");
    let mut full_command = vec![
        MOVER_BINARY.to_string(),
        "volume".into(),
        "--repo".into(),
        settings.repository.clone(),
        "--key-file".into(),
        key_file,
        "--summary-file".into(),
        TERMINATION_LOG.into(),
    ];
    full_command.extend(command);
    let (pod_security, capabilities, key_mode) = match &settings.access {
        // Root, but only with the capabilities named: no setuid, no ptrace, no raw network.
        MoverAccess::AnyOwner => (
            json!({"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": false,
                   "seccompProfile": {"type": "RuntimeDefault"}}),
            json!({"drop": ["ALL"], "add": any_owner_capabilities}),
            0o400,
        ),
        // Pod Security `restricted`. No fsGroup: the kubelet would re-own a restore's files,
        // and the key file is made readable to the user instead (0444; the pod runs nothing else).
        MoverAccess::SingleUser { uid, gid } => (
            json!({"runAsUser": uid, "runAsGroup": gid, "runAsNonRoot": true,
                   "seccompProfile": {"type": "RuntimeDefault"}}),
            json!({"drop": ["ALL"]}),
            0o444,
        ),
    };
    let mut container = json!({
        "name": "mover",
        "image": settings.image,
        "command": full_command,
        // A failed mover's stderr becomes its termination message: the operator reports why
        // without reading logs.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "privileged": false,
            "readOnlyRootFilesystem": true,
            "capabilities": capabilities,
        },
        "resources": {"requests": settings.resources.requests, "limits": settings.resources.limits},
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_DIR, "readOnly": read_only},
            {"name": "repository-key", "mountPath": KEY_DIR, "readOnly": true},
        ],
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
        // A mover talks to the repository only, never to the API server.
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "securityContext": pod_security,
        "containers": [container],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}},
            {"name": "repository-key", "secret": {
                "secretName": settings.key_secret,
                "items": [{"key": settings.key_secret_key, "path": KEY_FILE}],
                "defaultMode": key_mode,
            }},
        ],
    });
    if !settings.node_selector.is_empty() {
        spec["nodeSelector"] = json!(settings.node_selector);
    }
    if !settings.tolerations.is_empty() {
        spec["tolerations"] = Value::Array(settings.tolerations.clone());
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata(name, Some(&settings.namespace), &labels, &annotations, owner),
        "spec": spec,
    })
}

/// Adds `labels`, `annotations` and the owner to an object built elsewhere (the snapshot
/// import's helpers) (pure).
pub fn adopt(
    mut object: Value,
    labels: &Value,
    annotations: &Value,
    owner: &OwnerReference,
) -> Value {
    let metadata = &mut object["metadata"];
    for (field, extra) in [("labels", labels), ("annotations", annotations)] {
        let mut merged = metadata[field]
            .as_object()
            .cloned()
            .unwrap_or_else(Map::new);
        if let Some(extra) = extra.as_object() {
            merged.extend(extra.clone());
        }
        metadata[field] = Value::Object(merged);
    }
    metadata["ownerReferences"] = json!([owner]);
    object
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::mover::settings::MoverResources;

    pub(crate) fn settings(access: MoverAccess) -> MoverSettings {
        MoverSettings {
            image: "rewind.dev/testbed/rewind:abc".into(),
            image_pull_policy: Some("Never".into()),
            namespace: "rewind-system".into(),
            repository: "s3://bucket/prefix".into(),
            key_secret: "rewind-repository-key".into(),
            key_secret_key: "key".into(),
            repository_env_secret: Some("rewind-s3".into()),
            resources: MoverResources {
                requests: BTreeMap::from([
                    ("cpu".into(), "100m".into()),
                    ("memory".into(), "128Mi".into()),
                ]),
                limits: BTreeMap::from([("memory".into(), "512Mi".into())]),
            },
            node_selector: BTreeMap::from([("rewind.dev/testbed-node".into(), "real".into())]),
            tolerations: vec![
                json!({"key": "rewind.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}),
            ],
            access,
            worker_service_account: "rewind-worker".into(),
            worker_api_address: None,
        }
    }

    pub(crate) fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "rewind.dev/v1alpha1".into(),
            kind: "AccountBackup".into(),
            name: "acme-now".into(),
            uid: "uid-1".into(),
            controller: Some(true),
            block_owner_deletion: None,
        }
    }

    fn pod(access: MoverAccess) -> Value {
        mover_pod(
            &settings(access),
            PodParts {
                name: "rewind-copy-0123456789abcdef",
                labels: json!({"a": "b"}),
                annotations: json!({}),
                owner: &owner(),
                claim: "rewind-copy-0123456789abcdef",
                read_only: true,
                command: vec!["backup".into(), "--source".into(), DATA_DIR.into()],
                any_owner_capabilities: &["DAC_OVERRIDE"],
                active_deadline_seconds: 600,
            },
        )
    }

    #[test]
    fn a_deadline_is_the_operations_time_left_and_none_when_it_has_run_out() {
        assert_eq!(
            active_deadline_seconds(Duration::from_millis(90_500)),
            Some(90)
        );
        assert_eq!(active_deadline_seconds(Duration::from_millis(999)), None);
        assert_eq!(active_deadline_seconds(Duration::ZERO), None);
    }

    #[test]
    fn a_single_user_mover_passes_pod_security_restricted() {
        let pod = pod(MoverAccess::SingleUser {
            uid: 1000,
            gid: 1000,
        });
        let spec = &pod["spec"];
        let container = &spec["containers"][0];
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
        assert_eq!(spec["securityContext"]["runAsUser"], 1000);
        assert_eq!(
            spec["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(
            container["securityContext"]["allowPrivilegeEscalation"],
            false
        );
        assert_eq!(
            container["securityContext"]["capabilities"],
            json!({"drop": ["ALL"]})
        );
        assert!(
            spec["securityContext"].get("fsGroup").is_none(),
            "no fsGroup: the kubelet would re-own files"
        );
        assert_eq!(spec["volumes"][1]["secret"]["defaultMode"], 0o444);
    }

    #[test]
    fn an_any_owner_mover_is_root_with_only_the_capabilities_it_names() {
        let pod = pod(MoverAccess::AnyOwner);
        let container = &pod["spec"]["containers"][0];
        assert_eq!(pod["spec"]["securityContext"]["runAsUser"], 0);
        assert_eq!(
            container["securityContext"]["capabilities"],
            json!({"drop": ["ALL"], "add": ["DAC_OVERRIDE"]})
        );
        assert_eq!(
            container["securityContext"]["allowPrivilegeEscalation"],
            false
        );
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(pod["spec"]["volumes"][1]["secret"]["defaultMode"], 0o400);
    }

    #[test]
    fn a_mover_runs_once_without_api_access_and_reads_the_key_from_its_secret() {
        let pod = pod(MoverAccess::AnyOwner);
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["activeDeadlineSeconds"], 600);
        assert_eq!(spec["automountServiceAccountToken"], false);
        let command: Vec<&str> = spec["containers"][0]["command"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            command,
            [
                MOVER_BINARY,
                "volume",
                "--repo",
                "s3://bucket/prefix",
                "--key-file",
                "/var/run/rewind/repository/key",
                "--summary-file",
                TERMINATION_LOG,
                "backup",
                "--source",
                "/data"
            ]
        );
        assert_eq!(
            spec["volumes"][1]["secret"]["secretName"],
            "rewind-repository-key"
        );
        assert_eq!(
            spec["volumes"][1]["secret"]["items"][0],
            json!({"key": "key", "path": "key"})
        );
        assert_eq!(
            spec["containers"][0]["envFrom"][0]["secretRef"]["name"],
            "rewind-s3"
        );
    }

    #[test]
    fn a_mover_gets_the_settings_resources_placement_and_owner() {
        let pod = pod(MoverAccess::AnyOwner);
        let spec = &pod["spec"];
        assert_eq!(pod["metadata"]["namespace"], "rewind-system");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(
            spec["containers"][0]["resources"]["requests"]["memory"],
            "128Mi"
        );
        assert_eq!(
            spec["containers"][0]["resources"]["limits"]["memory"],
            "512Mi"
        );
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "Never");
        assert_eq!(spec["nodeSelector"]["rewind.dev/testbed-node"], "real");
        assert_eq!(spec["tolerations"][0]["key"], "rewind.dev/real-node");
    }

    #[test]
    fn a_mover_pod_is_a_valid_pod() {
        let pod: k8s_openapi::api::core::v1::Pod =
            serde_json::from_value(pod(MoverAccess::AnyOwner)).expect("a Pod");
        assert_eq!(pod.spec.expect("spec").containers.len(), 1);
    }
}
