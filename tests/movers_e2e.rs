//! Proves the mover builders of `src/mover/` on the bed's real node before any controller uses
//! them: the objects `backup_mover` returns, applied as they are, import a volume's snapshot into
//! another namespace, make a PVC from it, and run `rewind volume backup` from the `rewind` image
//! against it read-only, under Pod Security `baseline`. A volume whose files belong to several
//! owners is copied whole by an `AnyOwner` mover and refused, naming what it could not read, by
//! a `SingleUser` one (docs/volumes.md, "Who a mover runs as").
//!
//! One change to the built pod, because of the bed: its S3 server listens on loopback, which pods
//! cannot reach, so the repository is a `file:///repo` in an emptyDir that an init container
//! creates. On a REWIND_E2E_KUBECONFIG cluster these tests are skipped (no real node).

mod support;

use std::os::unix::fs::{PermissionsExt, chown};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use rewind::api::VolumeSnapshotRecord;
use rewind::mover::pod::{KEY_DIR, KEY_FILE, MOVER_BINARY};
use rewind::mover::{BackupVolume, MoverAccess, MoverResources, MoverSettings, backup_mover};
use serde_json::{Value, json};
use support::real_node::{RealNode, rewind_image};
use support::{Bed, unique};

const WAIT: Duration = Duration::from_secs(180);

fn apply_json(bed: &Bed, object: &Value) {
    bed.kubectl_with_stdin(&["apply", "-f", "-"], Some(object.to_string().as_bytes()))
        .unwrap_or_else(|e| panic!("applying {object}: {e}"));
}

/// Writes `path` (under the volume's directory on the host) owned by `uid` with `mode`.
fn owned(path: &Path, uid: u32, mode: u32, contents: Option<&str>) {
    match contents {
        Some(text) => std::fs::write(path, text).expect("a file in the volume"),
        None => std::fs::create_dir(path).expect("a directory in the volume"),
    }
    chown(path, Some(uid), Some(uid)).expect("chown");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The bed's repository for pods: a file:// one in an emptyDir, created by an init container
/// running as the mover does (see the module comment).
fn with_file_repository(mut pod: Value) -> Value {
    let mover = pod["spec"]["containers"][0].clone();
    let mut init = json!({
        "name": "init-repository",
        "image": mover["image"],
        "imagePullPolicy": mover["imagePullPolicy"],
        "command": [MOVER_BINARY, "repo", "--repo", "file:///repo", "--key-file", format!("{KEY_DIR}/{KEY_FILE}"), "init"],
        "securityContext": mover["securityContext"],
        "volumeMounts": [{"name": "repo", "mountPath": "/repo"}, {"name": "repository-key", "mountPath": KEY_DIR, "readOnly": true}],
    });
    init["terminationMessagePolicy"] = json!("FallbackToLogsOnError");
    pod["spec"]["initContainers"] = json!([init]);
    if let Some(mounts) = pod["spec"]["containers"][0]["volumeMounts"].as_array_mut() {
        mounts.push(json!({"name": "repo", "mountPath": "/repo"}));
    }
    if let Some(volumes) = pod["spec"]["volumes"].as_array_mut() {
        volumes.push(json!({"name": "repo", "emptyDir": {}}));
    }
    pod
}

/// Waits until the pod `name` in `namespace` has ended; its phase.
fn wait_ended(bed: &Bed, namespace: &str, name: &str) -> String {
    bed.wait_until(
        &format!("mover {namespace}/{name} to end"),
        WAIT,
        || {
            bed.jsonpath(&["-n", namespace, "pod", name], "{.status.phase}")
                .filter(|phase| phase == "Succeeded" || phase == "Failed")
        },
        || bed.describe(namespace),
    )
}

#[test]
fn a_backup_mover_copies_every_file_of_a_volume_of_several_owners_from_its_snapshot() {
    let bed = Bed::get();
    let Some(node) = RealNode::of(&bed) else {
        return;
    };
    let (Some(state_dir), Some(driver)) = (
        bed.require("CSI_STATE_DIR", "writing a volume's files from the host"),
        bed.require("CSI_DRIVER", "the snapshot's driver"),
    ) else {
        return;
    };
    let image = rewind_image(&bed);

    // A tenant's volume whose files belong to three users, some readable by their owner only.
    let project = bed.namespace("mover-src");
    let src = project.name.as_str();
    apply_json(
        &bed,
        &json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data", "namespace": src},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    );
    bed.wait_for_phase(src, "pvc", "data", "Bound", WAIT);
    let volume = bed
        .jsonpath(&["-n", src, "pvc", "data"], "{.spec.volumeName}")
        .expect("PV");
    let handle = bed
        .jsonpath(&["pv", &volume], "{.spec.csi.volumeHandle}")
        .expect("volume handle");
    let dir = Path::new(&state_dir).join(handle);
    owned(
        &dir.join("public.txt"),
        1000,
        0o644,
        Some("anyone may read this\n"),
    );
    owned(&dir.join("db"), 999, 0o700, None);
    owned(&dir.join("db/secret.txt"), 999, 0o600, Some("only 999\n"));
    owned(&dir.join("uploads"), 33, 0o750, None);
    owned(
        &dir.join("uploads/photo.jpg"),
        33,
        0o640,
        Some("jpeg bytes\n"),
    );

    apply_json(
        &bed,
        &json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                "metadata": {"name": "snap", "namespace": src},
                "spec": {"source": {"persistentVolumeClaimName": "data"}}}),
    );
    let content = bed.wait_until(
        "the tenant's VolumeSnapshot to become readyToUse",
        WAIT,
        || {
            (bed.jsonpath(
                &["-n", src, "volumesnapshot", "snap"],
                "{.status.readyToUse}",
            )
            .as_deref()
                == Some("true"))
            .then(|| {
                bed.jsonpath(
                    &["-n", src, "volumesnapshot", "snap"],
                    "{.status.boundVolumeSnapshotContentName}",
                )
            })?
        },
        || bed.describe(src),
    );
    let content_field = |path: &str| bed.jsonpath(&["volumesnapshotcontent", &content], path);
    let record = VolumeSnapshotRecord {
        project: src.to_string(),
        pvc: "data".into(),
        driver,
        snapshot_handle: content_field("{.status.snapshotHandle}"),
        restore_size: content_field("{.status.restoreSize}"),
        pvc_size: Some("1Gi".into()),
        storage_class: bed.var("STORAGE_CLASS").map(str::to_string),
        access_modes: vec!["ReadWriteOnce".into()],
        volume_snapshot_class: content_field("{.spec.volumeSnapshotClassName}"),
        ready: true,
    };
    assert!(record.snapshot_handle.is_some(), "{record:?}");

    // The operator's namespace: Pod Security baseline, the repository key in a Secret. The
    // namespace itself owns the movers here (an owner must exist, or the garbage collector
    // removes them at once; the operator's own will be its AccountBackups).
    let operator = bed.namespace("mover-op");
    let op = operator.name.as_str();
    bed.kubectl_ok(&[
        "label",
        "namespace",
        op,
        "pod-security.kubernetes.io/enforce=baseline",
    ]);
    bed.kubectl_ok(&[
        "-n",
        op,
        "create",
        "secret",
        "generic",
        "rewind-repository-key",
        "--from-literal=key=4f1c0a7d2b9e86f35d7c1e0b9a8f6d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4",
    ]);
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        name: op.to_string(),
        uid: bed
            .jsonpath(&["namespace", op], "{.metadata.uid}")
            .expect("the namespace's uid"),
        controller: Some(true),
        block_owner_deletion: None,
    };
    let (label_key, label_value) = node.label.split_once('=').expect("label key=value");
    let settings = |access| MoverSettings {
        image: image.clone(),
        image_pull_policy: Some("Never".into()),
        namespace: op.to_string(),
        repository: "file:///repo".into(),
        key_secret: "rewind-repository-key".into(),
        key_secret_key: "key".into(),
        repository_env_secret: None,
        resources: MoverResources {
            requests: [("cpu", "50m"), ("memory", "64Mi")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            limits: [("memory", "256Mi")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
        },
        node_selector: [(label_key.to_string(), label_value.to_string())].into(),
        tolerations: vec![json!({"key": node.taint, "operator": "Exists", "effect": "NoSchedule"})],
        access,
    };
    let run = |access: MoverAccess, backup_uid: &str| {
        let mover = backup_mover(
            &settings(access),
            &BackupVolume {
                backup_uid,
                owner: &owner,
                record: &record,
                read_only_many: false,
            },
            Duration::from_secs(600),
        )
        .expect("a mover");
        for object in [&mover.content, &mover.snapshot, &mover.pvc] {
            apply_json(&bed, object);
        }
        apply_json(&bed, &with_file_repository(mover.pod.clone()));
        let phase = wait_ended(&bed, op, &mover.name);
        (mover.name, phase)
    };

    // Root with DAC_OVERRIDE only: every file, whatever its owner and mode.
    let (name, phase) = run(MoverAccess::AnyOwner, &unique("uid-any-owner"));
    let logs = bed
        .kubectl(&["-n", op, "logs", &name, "-c", "mover"])
        .unwrap_or_else(|e| e);
    assert_eq!(
        phase,
        "Succeeded",
        "the AnyOwner mover: {logs}\n{}",
        bed.describe(op)
    );
    let summary: Value = logs
        .lines()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no JSON summary in the mover's output: {logs}"));
    assert_eq!(summary["files"], 3, "{summary}");
    assert_eq!(
        summary["directories"], 3,
        "the root, db and uploads: {summary}"
    );
    assert_eq!(summary["stream"], "volume.tree", "{summary}");
    let expected_bytes = ["anyone may read this\n", "only 999\n", "jpeg bytes\n"]
        .iter()
        .map(|text| text.len() as u64)
        .sum::<u64>();
    assert_eq!(
        summary["file_bytes"].as_u64(),
        Some(expected_bytes),
        "{summary}"
    );
    assert_eq!(
        bed.jsonpath(&["-n", op, "pvc", &name], "{.spec.dataSource.name}")
            .as_deref(),
        Some(name.as_str()),
        "the mover's PVC was made from the imported snapshot"
    );

    // One non-root user, nothing added: it cannot enter the directory of user 999, and says so.
    let (name, phase) = run(
        MoverAccess::SingleUser {
            uid: 1000,
            gid: 1000,
        },
        &unique("uid-single-user"),
    );
    let message = bed
        .jsonpath(
            &["-n", op, "pod", &name],
            "{.status.containerStatuses[0].state.terminated.message}",
        )
        .unwrap_or_default();
    assert_eq!(
        phase,
        "Failed",
        "the SingleUser mover: {message}\n{}",
        bed.describe(op)
    );
    assert!(
        message.contains("db") && message.to_lowercase().contains("permission denied"),
        "the failed mover's termination message names what it could not read: {message}"
    );

    eprintln!("the SingleUser mover ended as expected: {message}");

    // The helper contents are cluster-scoped: owned by the operator's namespace here, they go
    // with it; delete them now all the same (Retain: the tenant's snapshot is untouched).
    let _ = bed.kubectl(&[
        "delete",
        "volumesnapshotcontent",
        "-l",
        &format!("rewind.dev/mover,app.kubernetes.io/managed-by=rewind,rewind.dev/project={src}"),
        "--wait=false",
    ]);
}
