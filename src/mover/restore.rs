//! A restore mover (pure): an empty PVC in the operator's namespace, a pod that fills it with
//! `rewind volume restore`, then the filled volume handed to the restored PVC in the target
//! namespace (kept, re-pointed at the new claim, which names it). The mover never runs in the
//! target namespace: it holds the repository key, which a tenant's namespace must never see.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{Value, json};

use super::error::MoverError;
use super::names::{MoverRole, annotations, labels, mover_name};
use super::pod::{DATA_DIR, PodParts, active_deadline_seconds, metadata, mover_pod};
use super::settings::MoverSettings;
use crate::api::{TARGET_NAMESPACE_ANNOTATION, VolumeSnapshotRecord};
use crate::snapshot::import::quantity_bytes;

/// What a restore mover writes with: give each file its owner back (`CHOWN`), write into
/// directories it just made for another owner (`DAC_OVERRIDE`), set modes, times and attributes
/// of files it does not own (`FOWNER`), keep setgid bits across that (`FSETID`). Devices and
/// file capabilities are left out by `rewind volume restore` unless asked for, so neither
/// `MKNOD` nor `SETFCAP` is here.
pub const RESTORE_CAPABILITIES: [&str; 4] = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"];

/// Where a volume's copy is in the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepositoryCopy {
    /// The repository snapshot the backup mover wrote.
    pub snapshot: String,
    /// Its tree stream.
    pub stream: String,
}

/// One volume of one restore, to fill from the repository.
pub struct RestoreVolume<'a> {
    /// The ProjectRestore's UID.
    pub restore_uid: &'a str,
    /// The ProjectRestore, as the owner of the mover's objects (controller: true).
    pub owner: &'a OwnerReference,
    /// The namespace the restored PVC is created in.
    pub target_namespace: &'a str,
    /// The volume as the backup recorded it (class, size, access modes).
    pub record: &'a VolumeSnapshotRecord,
    /// Its copy in the repository.
    pub copy: &'a RepositoryCopy,
}

/// The objects of one restore mover, in the order they are created.
#[derive(Clone, Debug, PartialEq)]
pub struct RestoreMover {
    /// The name of both objects.
    pub name: String,
    /// The empty PVC in the operator's namespace, handed over once filled.
    pub pvc: Value,
    /// The pod that fills it.
    pub pod: Value,
}

/// The restore mover of one volume (pure). `time_left` is the restore's time before its
/// deadline (`status::time_left` with an injected clock).
pub fn restore_mover(
    settings: &MoverSettings,
    volume: &RestoreVolume<'_>,
    time_left: Duration,
) -> Result<RestoreMover, MoverError> {
    let RestoreVolume {
        restore_uid,
        owner,
        target_namespace,
        record,
        copy,
    } = *volume;
    let pvc = record.pvc.as_str();
    let deadline = active_deadline_seconds(time_left).ok_or_else(|| MoverError::NoTimeLeft {
        project: record.project.clone(),
        pvc: pvc.into(),
    })?;
    // Keyed by the target namespace: a restore may bring one project back twice, into two.
    let name = mover_name(MoverRole::Restore, restore_uid, target_namespace, pvc);
    let labels = labels(MoverRole::Restore, restore_uid, &record.project);
    let annotations = annotations(pvc, &[(TARGET_NAMESPACE_ANNOTATION, target_namespace)]);
    let namespace = settings.namespace.as_str();
    let claim = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(&name, Some(namespace), &labels, &annotations, owner),
        "spec": staging_claim_spec(record),
    });
    let command: Vec<String> = [
        "restore",
        "--snapshot",
        copy.snapshot.as_str(),
        "--stream",
        copy.stream.as_str(),
        "--target",
        DATA_DIR,
    ]
    .map(String::from)
    .into();
    let pod = mover_pod(
        settings,
        PodParts {
            name: &name,
            labels,
            annotations,
            owner,
            claim: &name,
            read_only: false,
            command,
            any_owner_capabilities: &RESTORE_CAPABILITIES,
            active_deadline_seconds: deadline,
        },
    );
    Ok(RestoreMover {
        name,
        pvc: claim,
        pod,
    })
}

/// The empty PVC's spec (pure): the original's class and access modes (the restored claim binds
/// the same volume, so it must be able to ask for them), at least the original's size and the
/// snapshot's restore size.
fn staging_claim_spec(record: &VolumeSnapshotRecord) -> Value {
    let modes = if record.access_modes.is_empty() {
        vec!["ReadWriteOnce".to_string()]
    } else {
        record.access_modes.clone()
    };
    let size = [record.pvc_size.as_deref(), record.restore_size.as_deref()]
        .into_iter()
        .flatten()
        .max_by_key(|size| quantity_bytes(size).unwrap_or(0))
        .unwrap_or("1Gi");
    let mut spec = json!({
        "accessModes": modes,
        "resources": {"requests": {"storage": size}},
    });
    if let Some(class) = &record.storage_class {
        spec["storageClassName"] = Value::String(class.clone());
    }
    spec
}

/// Merge patch of the filled PersistentVolume before its staging claim is deleted (pure):
/// Retain, so deleting the claim releases the volume instead of deleting it.
pub fn keep_volume_patch() -> Value {
    json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}})
}

/// Merge patch that hands the released volume to the restored claim (pure): its claimRef names
/// the new claim, without the old claim's uid, so the volume controller binds the two.
pub fn hand_over_patch(target_namespace: &str, target_pvc: &str) -> Value {
    json!({"spec": {"claimRef": {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": target_namespace,
        "name": target_pvc,
        "uid": null,
        "resourceVersion": null,
    }}})
}

/// Merge patch that gives the bound volume its class's reclaim policy back (pure): from then
/// on it belongs to the restored claim like any provisioned volume.
pub fn reclaim_policy_patch(policy: &str) -> Value {
    json!({"spec": {"persistentVolumeReclaimPolicy": policy}})
}

/// Points a (rewritten) restored PVC at the filled volume instead of a snapshot (pure).
pub fn claim_filled_volume(mut pvc: Value, volume_name: &str) -> Value {
    if let Some(spec) = pvc["spec"].as_object_mut() {
        spec.remove("dataSource");
        spec.remove("dataSourceRef");
        spec.insert("volumeName".into(), Value::String(volume_name.into()));
    }
    pvc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{OPERATION_UID_LABEL, PVC_ANNOTATION};
    use crate::mover::pod::tests::{owner, settings};
    use crate::mover::settings::MoverAccess;

    fn record() -> VolumeSnapshotRecord {
        VolumeSnapshotRecord {
            project: "shop".into(),
            pvc: "uploads".into(),
            driver: "hostpath.csi.rewind.dev".into(),
            snapshot_handle: None,
            restore_size: Some("1073741824".into()),
            pvc_size: Some("2Gi".into()),
            storage_class: Some("rewind-hostpath".into()),
            access_modes: vec!["ReadWriteMany".into()],
            volume_snapshot_class: None,
            ready: true,
            repository_copy: None,
        }
    }

    fn copy() -> RepositoryCopy {
        RepositoryCopy {
            snapshot: "7f3a".into(),
            stream: "volume.tree".into(),
        }
    }

    fn mover(access: MoverAccess, target: &str) -> RestoreMover {
        restore_mover(
            &settings(access),
            &RestoreVolume {
                restore_uid: "restore-1",
                owner: &owner(),
                target_namespace: target,
                record: &record(),
                copy: &copy(),
            },
            Duration::from_secs(600),
        )
        .expect("a mover")
    }

    #[test]
    fn the_empty_pvc_is_made_in_the_operators_namespace_like_the_original() {
        let mover = mover(MoverAccess::AnyOwner, "shop-r1");
        let spec = &mover.pvc["spec"];
        assert_eq!(mover.pvc["metadata"]["namespace"], "rewind-system");
        assert_eq!(spec["accessModes"], json!(["ReadWriteMany"]));
        assert_eq!(spec["storageClassName"], "rewind-hostpath");
        assert_eq!(
            spec["resources"]["requests"]["storage"], "2Gi",
            "the larger of the two sizes"
        );
        assert!(
            spec.get("dataSource").is_none(),
            "empty: the mover fills it"
        );
        assert_eq!(
            mover.pvc["metadata"]["annotations"][TARGET_NAMESPACE_ANNOTATION],
            "shop-r1"
        );
        assert_eq!(
            mover.pvc["metadata"]["annotations"][PVC_ANNOTATION],
            "uploads"
        );
        assert_eq!(
            mover.pvc["metadata"]["labels"][OPERATION_UID_LABEL],
            "restore-1"
        );
    }

    #[test]
    fn the_pod_fills_the_pvc_from_the_repository_copy() {
        let mover = mover(MoverAccess::AnyOwner, "shop-r1");
        let spec = &mover.pod["spec"];
        assert_eq!(
            spec["volumes"][0]["persistentVolumeClaim"],
            json!({"claimName": mover.name, "readOnly": false})
        );
        let command = spec["containers"][0]["command"].to_string();
        assert!(
            command.contains(
                r#""restore","--snapshot","7f3a","--stream","volume.tree","--target","/data""#
            ),
            "{command}"
        );
        assert!(
            !command.contains("--devices") && !command.contains("--capabilities"),
            "{command}"
        );
        assert_eq!(
            spec["containers"][0]["securityContext"]["capabilities"]["add"],
            json!(["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"])
        );
    }

    #[test]
    fn a_single_user_restore_mover_adds_no_capability() {
        let mover = mover(
            MoverAccess::SingleUser {
                uid: 1000,
                gid: 1000,
            },
            "shop-r1",
        );
        let security = &mover.pod["spec"]["containers"][0]["securityContext"];
        assert_eq!(security["capabilities"], json!({"drop": ["ALL"]}));
    }

    #[test]
    fn two_targets_of_one_restore_get_two_movers() {
        assert_ne!(
            mover(MoverAccess::AnyOwner, "shop-a").name,
            mover(MoverAccess::AnyOwner, "shop-b").name
        );
    }

    #[test]
    fn a_restore_out_of_time_starts_no_mover() {
        let refused = restore_mover(
            &settings(MoverAccess::AnyOwner),
            &RestoreVolume {
                restore_uid: "restore-1",
                owner: &owner(),
                target_namespace: "shop-r1",
                record: &record(),
                copy: &copy(),
            },
            Duration::ZERO,
        );
        assert!(matches!(refused, Err(MoverError::NoTimeLeft { .. })));
    }

    #[test]
    fn the_filled_volume_is_kept_then_handed_to_the_restored_claim() {
        assert_eq!(
            keep_volume_patch()["spec"]["persistentVolumeReclaimPolicy"],
            "Retain"
        );
        let patch = hand_over_patch("shop-r1", "uploads");
        let claim_ref = &patch["spec"]["claimRef"];
        assert_eq!(claim_ref["namespace"], "shop-r1");
        assert_eq!(claim_ref["name"], "uploads");
        assert!(
            claim_ref["uid"].is_null(),
            "the staging claim's uid is removed"
        );
        assert_eq!(
            reclaim_policy_patch("Delete")["spec"]["persistentVolumeReclaimPolicy"],
            "Delete"
        );
    }

    #[test]
    fn the_restored_claim_names_the_filled_volume_instead_of_a_snapshot() {
        let pvc = json!({"spec": {
            "dataSource": {"kind": "VolumeSnapshot", "name": "x"},
            "dataSourceRef": {"kind": "VolumeSnapshot", "name": "x"},
            "resources": {"requests": {"storage": "2Gi"}},
        }});
        let claimed = claim_filled_volume(pvc, "pvc-1234");
        assert_eq!(claimed["spec"]["volumeName"], "pvc-1234");
        assert!(claimed["spec"].get("dataSource").is_none());
        assert!(claimed["spec"].get("dataSourceRef").is_none());
        assert_eq!(claimed["spec"]["resources"]["requests"]["storage"], "2Gi");
    }
}
