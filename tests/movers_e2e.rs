//! Proves the mover builders of `src/mover/` on the bed's real node before any controller uses
//! them: the objects `backup_mover` returns, applied as they are, import a volume's snapshot into
//! another namespace, make a PVC from it, and run `rewind volume backup` from the `rewind` image
//! against it read-only, under Pod Security `baseline`. A volume whose files belong to several
//! owners is copied whole by an `AnyOwner` mover and refused, naming what it could not read, by
//! a `SingleUser` one (docs/volumes.md, "Who a mover runs as"). The objects `restore_mover`
//! returns fill an empty PVC from that copy, and the hand-over patches give the filled volume to
//! a claim in a new namespace with every owner, mode and byte back.
//!
//! One change to the built pods, because of the bed: its S3 server listens on loopback, which
//! pods cannot reach, so the repository is a `file:///repo` on an emptyDir or a PVC, created by
//! an init container. On a REWIND_E2E_KUBECONFIG cluster these tests are skipped (no real node).

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use rewind::api::VolumeSnapshotRecord;
use rewind::mover::pod::{KEY_DIR, KEY_FILE, MOVER_BINARY};
use rewind::mover::restore::{
    claim_filled_volume, hand_over_patch, keep_volume_patch, reclaim_policy_patch,
};
use rewind::mover::{
    BackupVolume, MoverAccess, MoverResources, MoverSettings, RepositoryCopy, RestoreVolume,
    backup_mover, restore_mover,
};
use serde_json::{Value, json};
use support::movers::owned;
use support::real_node::{RealNode, rewind_image};
use support::{Bed, TestNamespace, unique};

const WAIT: Duration = Duration::from_secs(180);

fn apply_json(bed: &Bed, object: &Value) {
    bed.kubectl_with_stdin(&["apply", "-f", "-"], Some(object.to_string().as_bytes()))
        .unwrap_or_else(|e| panic!("applying {object}: {e}"));
}

/// The bed's repository for pods (see the module comment): a file:// one at /repo on `volume`
/// (a pod `volumes:` entry without its name), created first by an init container running as
/// the mover does when `init`.
fn with_repository(mut pod: Value, volume: Value, init: bool) -> Value {
    let mover = pod["spec"]["containers"][0].clone();
    if init {
        pod["spec"]["initContainers"] = json!([{
            "name": "init-repository",
            "image": mover["image"],
            "imagePullPolicy": mover["imagePullPolicy"],
            "command": [MOVER_BINARY, "repo", "--repo", "file:///repo", "--key-file", format!("{KEY_DIR}/{KEY_FILE}"), "init"],
            "securityContext": mover["securityContext"],
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [{"name": "repo", "mountPath": "/repo"}, {"name": "repository-key", "mountPath": KEY_DIR, "readOnly": true}],
        }]);
    }
    if let Some(mounts) = pod["spec"]["containers"][0]["volumeMounts"].as_array_mut() {
        mounts.push(json!({"name": "repo", "mountPath": "/repo"}));
    }
    let mut entry = volume;
    entry["name"] = json!("repo");
    if let Some(volumes) = pod["spec"]["volumes"].as_array_mut() {
        volumes.push(entry);
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

/// A tenant's volume whose files belong to three users, some readable by their owner only, and
/// its ready snapshot, recorded as a backup records it.
fn tenant_volume(bed: &Bed) -> Option<(TestNamespace<'_>, VolumeSnapshotRecord)> {
    let state_dir = bed.require("CSI_STATE_DIR", "writing a volume's files from the host")?;
    let driver = bed.require("CSI_DRIVER", "the snapshot's driver")?;
    let project = bed.namespace("mover-src");
    let src = project.name.clone();
    apply_json(
        bed,
        &json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data", "namespace": src},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    );
    bed.wait_for_phase(&src, "pvc", "data", "Bound", WAIT);
    let dir = Path::new(&state_dir).join(volume_handle(bed, &src, "data"));
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
        bed,
        &json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                "metadata": {"name": "snap", "namespace": src},
                "spec": {"source": {"persistentVolumeClaimName": "data"}}}),
    );
    let content = bed.wait_until(
        "the tenant's VolumeSnapshot to become readyToUse",
        WAIT,
        || {
            (bed.jsonpath(
                &["-n", &src, "volumesnapshot", "snap"],
                "{.status.readyToUse}",
            )
            .as_deref()
                == Some("true"))
            .then(|| {
                bed.jsonpath(
                    &["-n", &src, "volumesnapshot", "snap"],
                    "{.status.boundVolumeSnapshotContentName}",
                )
            })?
        },
        || bed.describe(&src),
    );
    let content_field = |path: &str| bed.jsonpath(&["volumesnapshotcontent", &content], path);
    let record = VolumeSnapshotRecord {
        project: src.clone(),
        pvc: "data".into(),
        driver,
        snapshot_handle: content_field("{.status.snapshotHandle}"),
        restore_size: content_field("{.status.restoreSize}"),
        pvc_size: Some("1Gi".into()),
        storage_class: bed.var("STORAGE_CLASS").map(str::to_string),
        access_modes: vec!["ReadWriteOnce".into()],
        volume_snapshot_class: content_field("{.spec.volumeSnapshotClassName}"),
        ready: true,
        repository_copy: None,
    };
    assert!(record.snapshot_handle.is_some(), "{record:?}");
    Some((project, record))
}

/// The CSI handle of the volume bound to `pvc` (its directory under CSI_STATE_DIR).
fn volume_handle(bed: &Bed, namespace: &str, pvc: &str) -> String {
    let volume = bed
        .jsonpath(&["-n", namespace, "pvc", pvc], "{.spec.volumeName}")
        .expect("a bound PVC names its volume");
    bed.jsonpath(&["pv", &volume], "{.spec.csi.volumeHandle}")
        .expect("volume handle")
}

/// The operator's namespace: Pod Security baseline, the repository key in a Secret. The
/// namespace itself owns the movers here (an owner must exist, or the garbage collector removes
/// them at once; the operator's own will be its AccountBackups and ProjectRestores).
fn operator_namespace(bed: &Bed) -> (TestNamespace<'_>, OwnerReference) {
    let operator = bed.namespace("mover-op");
    let op = operator.name.clone();
    bed.kubectl_ok(&[
        "label",
        "namespace",
        &op,
        "pod-security.kubernetes.io/enforce=baseline",
    ]);
    bed.kubectl_ok(&[
        "-n",
        &op,
        "create",
        "secret",
        "generic",
        "rewind-repository-key",
        "--from-literal=key=4f1c0a7d2b9e86f35d7c1e0b9a8f6d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4",
    ]);
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        name: op.clone(),
        uid: bed
            .jsonpath(&["namespace", &op], "{.metadata.uid}")
            .expect("the namespace's uid"),
        controller: Some(true),
        block_owner_deletion: None,
    };
    (operator, owner)
}

/// Mover settings for the bed: the `rewind` image, the real node, the file:// repository.
fn settings(image: &str, namespace: &str, node: &RealNode, access: MoverAccess) -> MoverSettings {
    let (label_key, label_value) = node.label.split_once('=').expect("label key=value");
    MoverSettings {
        image: image.to_string(),
        image_pull_policy: Some("Never".into()),
        namespace: namespace.to_string(),
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
        worker_service_account: "rewind-worker".into(),
        worker_api_address: None,
    }
}

/// Applies a backup mover's objects, its pod with the repository on `repository`; waits for its
/// end. (name, phase, the JSON summary it printed if any).
fn run_backup_mover(
    bed: &Bed,
    settings: &MoverSettings,
    volume: &BackupVolume<'_>,
    repository: Value,
) -> (String, String, Option<Value>) {
    let mover = backup_mover(settings, volume, Duration::from_secs(600)).expect("a mover");
    for object in [&mover.content, &mover.snapshot, &mover.pvc] {
        apply_json(bed, object);
    }
    apply_json(bed, &with_repository(mover.pod.clone(), repository, true));
    let phase = wait_ended(bed, &settings.namespace, &mover.name);
    let summary = bed
        .kubectl(&[
            "-n",
            &settings.namespace,
            "logs",
            &mover.name,
            "-c",
            "mover",
        ])
        .ok()
        .and_then(|logs| {
            logs.lines()
                .find_map(|line| serde_json::from_str(line).ok())
        });
    (mover.name, phase, summary)
}

/// The termination message of a pod's first container.
fn termination_message(bed: &Bed, namespace: &str, pod: &str) -> String {
    bed.jsonpath(
        &["-n", namespace, "pod", pod],
        "{.status.containerStatuses[0].state.terminated.message}",
    )
    .unwrap_or_default()
}

/// Deletes the helper contents of `project`'s movers now (cluster-scoped; owned by the
/// operator's namespace here they would go with it). Retain: the tenant's snapshot stays.
fn delete_helper_contents(bed: &Bed, project: &str) {
    let _ = bed.kubectl(&[
        "delete",
        "volumesnapshotcontent",
        "-l",
        &format!(
            "rewind.dev/mover,app.kubernetes.io/managed-by=rewind,rewind.dev/project={project}"
        ),
        "--wait=false",
    ]);
}

#[test]
fn a_backup_mover_copies_every_file_of_a_volume_of_several_owners_from_its_snapshot() {
    let bed = Bed::get();
    let Some(node) = RealNode::of(&bed) else {
        return;
    };
    let Some((project, record)) = tenant_volume(&bed) else {
        return;
    };
    let image = rewind_image(&bed);
    let (operator, owner) = operator_namespace(&bed);
    let op = operator.name.as_str();
    let empty_dir = || json!({"emptyDir": {}});

    // Root with DAC_OVERRIDE only: every file, whatever its owner and mode.
    let any_owner = settings(&image, op, &node, MoverAccess::AnyOwner);
    let backup_uid = unique("uid-any-owner");
    let volume = BackupVolume {
        backup_uid: &backup_uid,
        owner: &owner,
        record: &record,
        read_only_many: false,
    };
    let (name, phase, summary) = run_backup_mover(&bed, &any_owner, &volume, empty_dir());
    let logs = bed
        .kubectl(&["-n", op, "logs", &name, "-c", "mover"])
        .unwrap_or_else(|e| e);
    assert_eq!(
        phase,
        "Succeeded",
        "the AnyOwner mover: {logs}\n{}",
        bed.describe(op)
    );
    let summary =
        summary.unwrap_or_else(|| panic!("no JSON summary in the mover's output: {logs}"));
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
    let single_user = settings(
        &image,
        op,
        &node,
        MoverAccess::SingleUser {
            uid: 1000,
            gid: 1000,
        },
    );
    let backup_uid = unique("uid-single-user");
    let volume = BackupVolume {
        backup_uid: &backup_uid,
        owner: &owner,
        record: &record,
        read_only_many: false,
    };
    let (name, phase, _) = run_backup_mover(&bed, &single_user, &volume, empty_dir());
    let message = termination_message(&bed, op, &name);
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
    delete_helper_contents(&bed, &project.name);
}

#[test]
fn a_restore_mover_fills_a_volume_that_is_then_handed_to_the_restored_claim() {
    let bed = Bed::get();
    let Some(node) = RealNode::of(&bed) else {
        return;
    };
    let Some(state_dir) = bed.require("CSI_STATE_DIR", "reading the restored files from the host")
    else {
        return;
    };
    let Some((project, record)) = tenant_volume(&bed) else {
        return;
    };
    let image = rewind_image(&bed);
    let (operator, owner) = operator_namespace(&bed);
    let op = operator.name.as_str();
    let settings = settings(&image, op, &node, MoverAccess::AnyOwner);

    // The repository on a PVC of its own, which both movers mount in turn.
    apply_json(
        &bed,
        &json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "repository", "namespace": op},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    );
    let repository = || json!({"persistentVolumeClaim": {"claimName": "repository"}});
    let backup_uid = unique("uid-backup");
    let volume = BackupVolume {
        backup_uid: &backup_uid,
        owner: &owner,
        record: &record,
        read_only_many: false,
    };
    let (name, phase, summary) = run_backup_mover(&bed, &settings, &volume, repository());
    assert_eq!(
        phase,
        "Succeeded",
        "the backup mover: {}",
        termination_message(&bed, op, &name)
    );
    let summary = summary.expect("the backup mover's summary");
    let copy = RepositoryCopy {
        snapshot: summary["snapshot"]
            .as_str()
            .expect("snapshot id")
            .to_string(),
        stream: summary["stream"].as_str().expect("stream").to_string(),
    };
    delete_helper_contents(&bed, &project.name);

    // The restore: an empty PVC in the operator's namespace, filled by the mover.
    let target = bed.namespace("mover-target");
    let restore_uid = unique("uid-restore");
    let mover = restore_mover(
        &settings,
        &RestoreVolume {
            restore_uid: &restore_uid,
            owner: &owner,
            target_namespace: &target.name,
            record: &record,
            copy: &copy,
        },
        Duration::from_secs(600),
    )
    .expect("a restore mover");
    apply_json(&bed, &mover.pvc);
    apply_json(
        &bed,
        &with_repository(mover.pod.clone(), repository(), false),
    );
    let phase = wait_ended(&bed, op, &mover.name);
    assert_eq!(
        phase,
        "Succeeded",
        "the restore mover: {}\n{}",
        termination_message(&bed, op, &mover.name),
        bed.describe(op)
    );

    // The hand-over, as the operator will do it: keep the volume, release it, point it at the
    // restored claim, create that claim naming it, give the volume its reclaim policy back.
    let pv = bed
        .jsonpath(&["-n", op, "pvc", &mover.name], "{.spec.volumeName}")
        .expect("the filled PVC's volume");
    let staging_uid = bed.jsonpath(&["-n", op, "pvc", &mover.name], "{.metadata.uid}");
    assert_eq!(
        bed.jsonpath(&["pv", &pv], "{.spec.claimRef.uid}"),
        staging_uid,
        "the volume is the one the operator's own staging claim holds"
    );
    let patch = |patch: Value| {
        bed.kubectl_ok(&[
            "patch",
            "pv",
            &pv,
            "--type",
            "merge",
            "-p",
            &patch.to_string(),
        ]);
    };
    patch(keep_volume_patch());
    bed.kubectl_ok(&[
        "-n",
        op,
        "delete",
        "pod",
        &mover.name,
        "--wait=true",
        "--timeout=60s",
    ]);
    bed.kubectl_ok(&[
        "-n",
        op,
        "delete",
        "pvc",
        &mover.name,
        "--wait=true",
        "--timeout=60s",
    ]);
    bed.wait_until(
        "the filled volume to be Released",
        WAIT,
        || {
            (bed.jsonpath(&["pv", &pv], "{.status.phase}").as_deref() == Some("Released"))
                .then_some(())
        },
        || {
            bed.kubectl(&["get", "pv", &pv, "-o", "yaml"])
                .unwrap_or_else(|e| e)
        },
    );
    patch(hand_over_patch(&target.name, "data"));
    let restored = claim_filled_volume(
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "data", "namespace": target.name},
               "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": record.storage_class,
                        "resources": {"requests": {"storage": "1Gi"}}}}),
        &pv,
    );
    apply_json(&bed, &restored);
    bed.wait_for_phase(&target.name, "pvc", "data", "Bound", WAIT);
    patch(reclaim_policy_patch("Delete"));

    // Same files, same owners and modes, in the tenant's new namespace.
    let dir = Path::new(&state_dir).join(volume_handle(&bed, &target.name, "data"));
    for (path, uid, mode, contents) in [
        ("public.txt", 1000, 0o644, Some("anyone may read this\n")),
        ("db", 999, 0o700, None),
        ("db/secret.txt", 999, 0o600, Some("only 999\n")),
        ("uploads", 33, 0o750, None),
        ("uploads/photo.jpg", 33, 0o640, Some("jpeg bytes\n")),
    ] {
        let meta =
            std::fs::symlink_metadata(dir.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (uid, mode), "{path}");
        if let Some(text) = contents {
            assert_eq!(
                std::fs::read_to_string(dir.join(path)).expect(path),
                text,
                "{path}"
            );
        }
    }
    assert_eq!(
        bed.jsonpath(&["pv", &pv], "{.spec.persistentVolumeReclaimPolicy}")
            .as_deref(),
        Some("Delete")
    );
}
