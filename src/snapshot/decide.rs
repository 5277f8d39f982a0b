//! Snapshot decisions without a client: class choice, deterministic names, which driver errors
//! the snapshotter retries by itself.

use sha2::{Digest, Sha256};

/// A VolumeSnapshotClass as the choice needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassInfo {
    /// The class name.
    pub name: String,
    /// Its CSI driver.
    pub driver: String,
    /// Annotated as the driver's default.
    pub is_default: bool,
}

/// The class for a PVC of `driver`: the backup's explicit class, else the driver's default class.
pub fn choose_class(explicit: Option<&str>, driver: &str, classes: &[ClassInfo]) -> Option<String> {
    if let Some(explicit) = explicit {
        return Some(explicit.to_string());
    }
    let of_driver: Vec<&ClassInfo> = classes.iter().filter(|c| c.driver == driver).collect();
    of_driver
        .iter()
        .find(|c| c.is_default)
        .or(if of_driver.len() == 1 {
            of_driver.first()
        } else {
            None
        })
        .map(|c| c.name.clone())
}

fn short_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..8])
}

/// The VolumeSnapshot name for one PVC of one backup: stable across retries, unique per backup.
pub fn snapshot_name(backup_uid: &str, pvc: &str) -> String {
    format!("rewind-{}", short_hash(&[backup_uid, pvc]))
}

/// Whether `name` has the shape of [`snapshot_name`]'s names (pure): `rewind-` and 16 hex digits.
pub fn has_snapshot_name_shape(name: &str) -> bool {
    name.strip_prefix("rewind-").is_some_and(|hash| {
        hash.len() == 16
            && hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The temporary VolumeSnapshotContent that deletes a physical snapshot.
pub fn deletion_content_name(driver: &str, handle: &str) -> String {
    format!("rewind-delete-{}", short_hash(&[driver, handle]))
}

/// gRPC codes the CSI snapshotter retries by itself (with backoff) after writing them into the
/// VolumeSnapshot's `status.error`: the driver was slow or busy, not refusing.
const RETRIED_CODES: [&str; 4] = [
    "code = DeadlineExceeded",
    "code = Unavailable",
    "code = ResourceExhausted",
    "code = Aborted",
];

/// Whether a VolumeSnapshot's `status.error` message is one the snapshotter keeps retrying
/// (pure): such an error is waited out until the snapshot timeout; any other fails at once.
pub fn driver_error_is_retried(message: &str) -> bool {
    RETRIED_CODES.iter().any(|code| message.contains(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, driver: &str, is_default: bool) -> ClassInfo {
        ClassInfo {
            name: name.into(),
            driver: driver.into(),
            is_default,
        }
    }

    #[test]
    fn explicit_class_wins() {
        assert_eq!(choose_class(Some("fast"), "d", &[]), Some("fast".into()));
    }

    #[test]
    fn default_class_of_the_driver_is_chosen() {
        let classes = [
            class("a", "other", true),
            class("b", "hostpath", false),
            class("c", "hostpath", true),
        ];
        assert_eq!(choose_class(None, "hostpath", &classes), Some("c".into()));
    }

    #[test]
    fn a_sole_class_of_the_driver_is_used_even_without_the_default_annotation() {
        assert_eq!(
            choose_class(None, "hostpath", &[class("only", "hostpath", false)]),
            Some("only".into())
        );
    }

    #[test]
    fn no_class_for_the_driver_means_none() {
        assert_eq!(
            choose_class(None, "nfs", &[class("c", "hostpath", true)]),
            None
        );
    }

    #[test]
    fn only_names_made_like_a_backups_snapshot_names_have_their_shape() {
        assert!(has_snapshot_name_shape(&snapshot_name("uid-1", "data")));
        assert!(!has_snapshot_name_shape("rewind-restore-0123456789abcdef"));
        assert!(!has_snapshot_name_shape(&deletion_content_name("d", "h")));
        assert!(!has_snapshot_name_shape("rewind-0123456789ABCDEF"));
        assert!(!has_snapshot_name_shape("data"));
    }

    #[test]
    fn snapshot_names_are_deterministic_and_distinct_per_backup() {
        assert_eq!(
            snapshot_name("uid-1", "data"),
            snapshot_name("uid-1", "data")
        );
        assert_ne!(
            snapshot_name("uid-1", "data"),
            snapshot_name("uid-2", "data")
        );
        assert!(snapshot_name("uid-1", "data").len() <= 63);
    }

    #[test]
    fn a_driver_that_timed_out_is_waited_for_and_a_refusal_is_not() {
        assert!(driver_error_is_retried(
            "Failed to create snapshot: failed to take snapshot of the volume vol-1: \"rpc error: code = DeadlineExceeded desc = context deadline exceeded\""
        ));
        assert!(driver_error_is_retried(
            "rpc error: code = Unavailable desc = connection refused"
        ));
        assert!(!driver_error_is_retried(
            "rpc error: code = NotFound desc = source volume vol-1: no such file"
        ));
        assert!(!driver_error_is_retried(
            "rpc error: code = InvalidArgument desc = bad"
        ));
    }
}
