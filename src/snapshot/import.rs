//! Importing a physical snapshot into a namespace, as objects (pure): a pre-provisioned
//! VolumeSnapshotContent (Retain) bound to a new VolumeSnapshot, and a PVC with that dataSource.
//! A restore imports into the target namespace, a backup mover into the operator's own.

use serde_json::{Value, json};

use crate::api::VolumeSnapshotRecord;

/// The pre-provisioned content pointing at the backup's snapshot (pure).
pub fn helper_content(name: &str, namespace: &str, record: &VolumeSnapshotRecord) -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "rewind"}},
        "spec": {
            // Retain: the physical snapshot stays the backup's; removing this helper must not delete it.
            "deletionPolicy": "Retain",
            "driver": record.driver,
            "source": {"snapshotHandle": record.snapshot_handle},
            "volumeSnapshotClassName": record.volume_snapshot_class,
            "volumeSnapshotRef": {"name": name, "namespace": namespace},
        }
    })
}

/// The VolumeSnapshot bound to the helper content (pure).
pub fn helper_snapshot(name: &str, namespace: &str) -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "rewind"}},
        "spec": {"source": {"volumeSnapshotContentName": name}}
    })
}

/// Points a (rewritten) PVC at the helper snapshot and makes it big enough for the data (pure).
pub fn pvc_from_snapshot(mut pvc: Value, snapshot: &str, record: &VolumeSnapshotRecord) -> Value {
    pvc["spec"]["dataSource"] =
        json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snapshot});
    if let Some(size) = &record.restore_size
        && let Ok(bytes) = size.parse::<u64>()
    {
        let requested = pvc["spec"]["resources"]["requests"]["storage"]
            .as_str()
            .and_then(quantity_bytes)
            .unwrap_or(0);
        if requested < bytes {
            pvc["spec"]["resources"]["requests"]["storage"] = Value::String(bytes.to_string());
        }
    }
    pvc
}

/// Bytes of a Kubernetes quantity such as `1Gi`, `500M` or `1073741824` (pure; decimal fractions ignored).
pub fn quantity_bytes(quantity: &str) -> Option<u64> {
    let split = quantity
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(quantity.len());
    let (number, unit) = quantity.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> VolumeSnapshotRecord {
        VolumeSnapshotRecord {
            project: "shop".into(),
            pvc: "data".into(),
            driver: "hostpath.csi.k8s.io".into(),
            snapshot_handle: Some("snap-1".into()),
            restore_size: Some("2147483648".into()),
            volume_snapshot_class: Some("csi-hostpath-snapclass".into()),
            ready: true,
            ..Default::default()
        }
    }

    #[test]
    fn helper_content_retains_the_backups_snapshot_and_points_at_the_new_namespace() {
        let content = helper_content("h", "shop-r", &record());
        assert_eq!(content["spec"]["deletionPolicy"], "Retain");
        assert_eq!(content["spec"]["source"]["snapshotHandle"], "snap-1");
        assert_eq!(
            content["spec"]["volumeSnapshotRef"],
            json!({"name": "h", "namespace": "shop-r"})
        );
    }

    #[test]
    fn pvc_is_grown_to_the_snapshots_restore_size() {
        let pvc = json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}});
        let out = pvc_from_snapshot(pvc, "h", &record());
        assert_eq!(out["spec"]["dataSource"]["name"], "h");
        assert_eq!(
            out["spec"]["resources"]["requests"]["storage"],
            "2147483648"
        );
        let big = json!({"spec": {"resources": {"requests": {"storage": "5Gi"}}}});
        assert_eq!(
            pvc_from_snapshot(big, "h", &record())["spec"]["resources"]["requests"]["storage"],
            "5Gi"
        );
    }

    #[test]
    fn quantities_parse_with_binary_and_decimal_suffixes() {
        assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
        assert_eq!(quantity_bytes("500M"), Some(500_000_000));
        assert_eq!(quantity_bytes("42"), Some(42));
        assert_eq!(quantity_bytes("1.5Gi"), None);
    }
}
