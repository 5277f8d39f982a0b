//! Deterministic names and the labels that link a mover's objects to their operation, so a
//! restarted operator finds every mover it started from the cluster alone.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::api::{MOVER_LABEL, OPERATION_UID_LABEL, PROJECT_LABEL, PVC_ANNOTATION};

/// What a mover does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoverRole {
    /// Copies a volume (a PVC made from its snapshot) into the repository.
    Backup,
    /// Fills an empty volume from the repository.
    Restore,
    /// A worker that dumps a database pod into the repository.
    Dump,
    /// A worker that loads a dump from the repository into a database pod.
    Load,
}

impl MoverRole {
    /// The value of [`MOVER_LABEL`].
    pub fn label(self) -> &'static str {
        match self {
            Self::Backup => "backup",
            Self::Restore => "restore",
            Self::Dump => "dump",
            Self::Load => "load",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::Backup => "rewind-copy",
            Self::Restore => "rewind-fill",
            Self::Dump => "rewind-dump",
            Self::Load => "rewind-load",
        }
    }
}

/// The name of every object of one mover — its pod, its PVC and, for a backup, the helper
/// VolumeSnapshot and VolumeSnapshotContent — for one volume of one operation (pure).
/// `rewind-copy-<16 hex>` or `rewind-fill-<16 hex>`: a hash of the operation's UID, the
/// project (or restore target namespace) and the PVC, so two backups never share a mover and a
/// restarted operator computes the same name again.
pub fn mover_name(role: MoverRole, operation_uid: &str, project: &str, pvc: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [role.label(), operation_uid, project, pvc] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    format!("{}-{}", role.prefix(), hex::encode(&hasher.finalize()[..8]))
}

/// The labels of a mover's objects (pure). Project names are namespace names, so they fit a
/// label value; a PVC name may not, it goes in [`annotations`].
pub fn labels(role: MoverRole, operation_uid: &str, project: &str) -> Value {
    let component = match role {
        MoverRole::Backup | MoverRole::Restore => "mover",
        MoverRole::Dump | MoverRole::Load => "database-worker",
    };
    json!({
        "app.kubernetes.io/managed-by": "rewind",
        "app.kubernetes.io/component": component,
        MOVER_LABEL: role.label(),
        OPERATION_UID_LABEL: operation_uid,
        PROJECT_LABEL: project,
    })
}

/// The annotations of a mover's objects (pure): the PVC, and any `extra` pairs.
pub fn annotations(pvc: &str, extra: &[(&str, &str)]) -> Value {
    let mut map = Map::new();
    map.insert(PVC_ANNOTATION.into(), Value::String(pvc.into()));
    for (key, value) in extra {
        map.insert((*key).into(), Value::String((*value).into()));
    }
    Value::Object(map)
}

/// The label selector of every mover of one operation (pure): what cleanup lists, in the
/// operator's namespace only.
pub fn selector(operation_uid: &str) -> String {
    format!("{MOVER_LABEL},{OPERATION_UID_LABEL}={operation_uid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mover_name_is_the_same_after_a_restart_and_differs_between_backups() {
        let first = mover_name(MoverRole::Backup, "uid-1", "shop", "data");
        assert_eq!(
            first,
            mover_name(MoverRole::Backup, "uid-1", "shop", "data")
        );
        assert_ne!(
            first,
            mover_name(MoverRole::Backup, "uid-2", "shop", "data")
        );
        assert_ne!(
            first,
            mover_name(MoverRole::Backup, "uid-1", "blog", "data")
        );
        assert_ne!(
            first,
            mover_name(MoverRole::Backup, "uid-1", "shop", "uploads")
        );
        assert!(first.starts_with("rewind-copy-") && first.len() == "rewind-copy-".len() + 16);
    }

    #[test]
    fn backup_and_restore_movers_of_one_volume_never_share_a_name() {
        let backup = mover_name(MoverRole::Backup, "uid-1", "shop", "data");
        let restore = mover_name(MoverRole::Restore, "uid-1", "shop", "data");
        assert_ne!(backup, restore);
        assert!(restore.starts_with("rewind-fill-"));
    }

    #[test]
    fn parts_cannot_run_into_each_other() {
        assert_ne!(
            mover_name(MoverRole::Backup, "uid", "ab", "c"),
            mover_name(MoverRole::Backup, "uid", "a", "bc")
        );
    }

    #[test]
    fn labels_link_a_mover_to_its_operation_and_the_selector_finds_them() {
        let labels = labels(MoverRole::Restore, "uid-9", "shop");
        assert_eq!(labels[MOVER_LABEL], "restore");
        assert_eq!(labels[OPERATION_UID_LABEL], "uid-9");
        assert_eq!(labels[PROJECT_LABEL], "shop");
        assert_eq!(
            selector("uid-9"),
            "rewind.dev/mover,rewind.dev/operation-uid=uid-9"
        );
    }
}
