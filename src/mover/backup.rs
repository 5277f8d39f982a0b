//! A backup mover (pure): the backup's physical snapshot imported into the operator's namespace
//! (the restore's helper content and snapshot), a PVC made from it, and a pod that mounts it
//! read-only and runs `rewind volume backup --source /data` into the repository.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{Value, json};

use super::error::MoverError;
use super::names::{MoverRole, annotations, labels, mover_name};
use super::pod::{DATA_DIR, PodParts, active_deadline_seconds, adopt, metadata, mover_pod};
use super::settings::MoverSettings;
use crate::api::VolumeSnapshotRecord;
use crate::archive::layout::{
    VOLUME_OF_BACKUP_METADATA, VOLUME_PROJECT_METADATA, VOLUME_PVC_METADATA,
};
use crate::snapshot::import::{helper_content, helper_snapshot, pvc_from_snapshot};
use crate::volume::DEFAULT_STREAM;

/// What a backup mover reads with: every capability beyond this is dropped. It bypasses the
/// permission checks, so every file and directory is read whatever its owner and mode. Its
/// write half is moot here — the volume and the root file system are mounted read-only — and,
/// unlike the narrower `DAC_READ_SEARCH`, Pod Security `baseline` admits it (docs/volumes.md).
pub const BACKUP_CAPABILITIES: [&str; 1] = ["DAC_OVERRIDE"];

/// One volume of one backup, to copy.
pub struct BackupVolume<'a> {
    /// The AccountBackup's UID.
    pub backup_uid: &'a str,
    /// The AccountBackup, as the owner of every object (controller: true).
    pub owner: &'a OwnerReference,
    /// The volume's snapshot, as the backup recorded it.
    pub record: &'a VolumeSnapshotRecord,
    /// Whether the snapshot's storage class can make ReadOnlyMany volumes from a snapshot
    /// (observed or configured per class; when not, ReadWriteOnce mounted read-only).
    pub read_only_many: bool,
}

/// The objects of one backup mover, in the order they are created.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupMover {
    /// The name of every object below.
    pub name: String,
    /// The pre-provisioned VolumeSnapshotContent (Retain: the physical snapshot stays the backup's).
    pub content: Value,
    /// The VolumeSnapshot in the operator's namespace bound to it.
    pub snapshot: Value,
    /// The PVC made from that snapshot.
    pub pvc: Value,
    /// The pod that copies the PVC's files into the repository.
    pub pod: Value,
}

/// The backup mover of one volume (pure). `time_left` is the backup's time before its deadline
/// (`status::time_left` with an injected clock).
pub fn backup_mover(
    settings: &MoverSettings,
    volume: &BackupVolume<'_>,
    time_left: Duration,
) -> Result<BackupMover, MoverError> {
    let BackupVolume {
        backup_uid,
        owner,
        record,
        read_only_many,
    } = *volume;
    let (project, pvc) = (record.project.as_str(), record.pvc.as_str());
    if record.snapshot_handle.is_none() {
        return Err(MoverError::NoSnapshotHandle {
            project: project.into(),
            pvc: pvc.into(),
        });
    }
    let deadline = active_deadline_seconds(time_left).ok_or_else(|| MoverError::NoTimeLeft {
        project: project.into(),
        pvc: pvc.into(),
    })?;
    let name = mover_name(MoverRole::Backup, backup_uid, project, pvc);
    let labels = labels(MoverRole::Backup, backup_uid, project);
    let annotations = annotations(pvc, &[]);
    let namespace = settings.namespace.as_str();
    let content = adopt(
        helper_content(&name, namespace, record),
        &labels,
        &annotations,
        owner,
    );
    let snapshot = adopt(
        helper_snapshot(&name, namespace),
        &labels,
        &annotations,
        owner,
    );
    let claim = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(&name, Some(namespace), &labels, &annotations, owner),
        "spec": source_claim_spec(record, read_only_many),
    });
    let claim = pvc_from_snapshot(claim, &name, record);
    let command = backup_command(backup_uid, project, pvc);
    let pod = mover_pod(
        settings,
        PodParts {
            name: &name,
            labels,
            annotations,
            owner,
            claim: &name,
            read_only: true,
            command,
            any_owner_capabilities: &BACKUP_CAPABILITIES,
            active_deadline_seconds: deadline,
        },
    );
    Ok(BackupMover {
        name,
        content,
        snapshot,
        pvc: claim,
        pod,
    })
}

/// The source PVC's spec before its dataSource (pure): the snapshot's storage class, its size,
/// ReadOnlyMany when the class can, else ReadWriteOnce (the pod mounts it read-only either way).
fn source_claim_spec(record: &VolumeSnapshotRecord, read_only_many: bool) -> Value {
    let mode = if read_only_many {
        "ReadOnlyMany"
    } else {
        "ReadWriteOnce"
    };
    let size = record
        .pvc_size
        .as_deref()
        .or(record.restore_size.as_deref())
        .unwrap_or("1Gi");
    let mut spec = json!({
        "accessModes": [mode],
        "resources": {"requests": {"storage": size}},
    });
    if let Some(class) = &record.storage_class {
        spec["storageClassName"] = Value::String(class.clone());
    }
    spec
}

/// `rewind volume backup …` of the mover (pure). The repository snapshot it writes names the
/// backup under its own metadata key, never `backup-uid` (see [`VOLUME_OF_BACKUP_METADATA`]).
pub fn backup_command(backup_uid: &str, project: &str, pvc: &str) -> Vec<String> {
    let mut command: Vec<String> = ["backup", "--source", DATA_DIR, "--stream", DEFAULT_STREAM]
        .map(String::from)
        .into();
    for (key, value) in [
        (VOLUME_OF_BACKUP_METADATA, backup_uid),
        (VOLUME_PROJECT_METADATA, project),
        (VOLUME_PVC_METADATA, pvc),
    ] {
        command.push("--snapshot-meta".into());
        command.push(format!("{key}={value}"));
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MOVER_LABEL, OPERATION_UID_LABEL, PVC_ANNOTATION};
    use crate::mover::pod::tests::{owner, settings};
    use crate::mover::settings::MoverAccess;

    fn record() -> VolumeSnapshotRecord {
        VolumeSnapshotRecord {
            project: "shop".into(),
            pvc: "uploads".into(),
            driver: "hostpath.csi.rewind.dev".into(),
            snapshot_handle: Some("snap-1".into()),
            restore_size: Some("2147483648".into()),
            pvc_size: Some("1Gi".into()),
            storage_class: Some("rewind-hostpath".into()),
            access_modes: vec!["ReadWriteOnce".into()],
            volume_snapshot_class: Some("rewind-hostpath-snapshots".into()),
            ready: true,
            repository_copy: None,
        }
    }

    fn mover(read_only_many: bool) -> BackupMover {
        backup_mover(
            &settings(MoverAccess::AnyOwner),
            &BackupVolume {
                backup_uid: "uid-1",
                owner: &owner(),
                record: &record(),
                read_only_many,
            },
            Duration::from_secs(3600),
        )
        .expect("a mover")
    }

    #[test]
    fn the_snapshot_is_imported_into_the_operators_namespace_and_kept() {
        let mover = mover(false);
        assert_eq!(mover.content["spec"]["deletionPolicy"], "Retain");
        assert_eq!(mover.content["spec"]["source"]["snapshotHandle"], "snap-1");
        assert_eq!(
            mover.content["spec"]["volumeSnapshotRef"],
            json!({"name": mover.name, "namespace": "rewind-system"})
        );
        assert_eq!(mover.snapshot["metadata"]["namespace"], "rewind-system");
        assert_eq!(
            mover.content["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "rewind"
        );
        assert_eq!(mover.content["metadata"]["labels"][MOVER_LABEL], "backup");
        assert_eq!(
            mover.snapshot["metadata"]["ownerReferences"][0]["uid"],
            "uid-1"
        );
    }

    #[test]
    fn the_source_pvc_comes_from_that_snapshot_at_the_snapshots_size() {
        let mover = mover(false);
        let spec = &mover.pvc["spec"];
        assert_eq!(mover.pvc["metadata"]["namespace"], "rewind-system");
        assert_eq!(spec["dataSource"]["kind"], "VolumeSnapshot");
        assert_eq!(spec["dataSource"]["name"], mover.name);
        assert_eq!(spec["storageClassName"], "rewind-hostpath");
        assert_eq!(spec["resources"]["requests"]["storage"], "2147483648");
        assert_eq!(spec["accessModes"], json!(["ReadWriteOnce"]));
    }

    #[test]
    fn the_source_pvc_is_read_only_many_when_the_class_allows_it() {
        assert_eq!(
            mover(true).pvc["spec"]["accessModes"],
            json!(["ReadOnlyMany"])
        );
    }

    #[test]
    fn the_pod_mounts_the_source_read_only_and_copies_it_into_the_repository() {
        let mover = mover(false);
        let spec = &mover.pod["spec"];
        assert_eq!(
            spec["volumes"][0]["persistentVolumeClaim"],
            json!({"claimName": mover.name, "readOnly": true})
        );
        assert_eq!(spec["containers"][0]["volumeMounts"][0]["readOnly"], true);
        let command = spec["containers"][0]["command"].to_string();
        assert!(
            command.contains(r#""backup","--source","/data""#),
            "{command}"
        );
        assert!(
            command.contains(r#""volume-of-backup-uid=uid-1""#),
            "{command}"
        );
        assert!(
            command.contains(r#""project=shop""#) && command.contains(r#""pvc=uploads""#),
            "{command}"
        );
        assert_eq!(
            spec["containers"][0]["securityContext"]["capabilities"]["add"],
            json!(["DAC_OVERRIDE"])
        );
    }

    #[test]
    fn every_object_is_linked_to_its_backup() {
        let mover = mover(false);
        for object in [&mover.content, &mover.snapshot, &mover.pvc, &mover.pod] {
            assert_eq!(object["metadata"]["name"], mover.name);
            assert_eq!(object["metadata"]["labels"][OPERATION_UID_LABEL], "uid-1");
            assert_eq!(object["metadata"]["annotations"][PVC_ANNOTATION], "uploads");
            assert_eq!(
                object["metadata"]["ownerReferences"][0]["kind"],
                "AccountBackup"
            );
        }
    }

    #[test]
    fn the_copy_is_never_recorded_under_the_backups_own_uid_key() {
        let backup_key = format!("{}=", crate::archive::layout::BACKUP_UID_METADATA);
        let command = backup_command("uid-1", "shop", "uploads");
        assert!(
            !command.iter().any(|arg| arg.starts_with(&backup_key)),
            "{command:?}"
        );
    }

    #[test]
    fn no_mover_without_a_snapshot_handle_or_time_left() {
        let settings = settings(MoverAccess::AnyOwner);
        let owner = owner();
        let mut record = record();
        let out_of_time = backup_mover(
            &settings,
            &BackupVolume {
                backup_uid: "uid-1",
                owner: &owner,
                record: &record,
                read_only_many: false,
            },
            Duration::from_millis(400),
        );
        assert!(matches!(out_of_time, Err(MoverError::NoTimeLeft { .. })));
        record.snapshot_handle = None;
        let refused = backup_mover(
            &settings,
            &BackupVolume {
                backup_uid: "uid-1",
                owner: &owner,
                record: &record,
                read_only_many: false,
            },
            Duration::from_secs(60),
        )
        .expect_err("no handle");
        assert_eq!(refused.category(), "NoSnapshotHandle");
        assert!(refused.to_string().contains("shop/uploads"), "{refused}");
    }
}
