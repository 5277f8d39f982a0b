//! Where a restored PVC's contents come from (pure): the CSI snapshot, the backup's repository
//! copy, the snapshot with the copy behind it, or neither — with the reason.

use crate::api::{VolumeCopyRecord, VolumeSnapshotRecord, VolumeSource};

/// The plan for one restored volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumePlan<'a> {
    /// From the snapshot only (a failure fails the volume).
    Snapshot,
    /// From the snapshot, and from the repository copy if the storage system cannot provide it.
    SnapshotThenRepository(&'a VolumeCopyRecord),
    /// From the repository copy, filled by a mover pod.
    Repository(&'a VolumeCopyRecord),
    /// Neither can be used: why, and what to do.
    Fail(String),
}

/// The plan for a volume as the backup recorded it (pure). `movers_off` is why this operator
/// runs no movers, if it runs none.
pub fn volume_plan<'a>(
    source: VolumeSource,
    record: &'a VolumeSnapshotRecord,
    movers_off: Option<&str>,
) -> VolumePlan<'a> {
    let snapshot = record.snapshot_handle.is_some();
    let copy = record.repository_copy.as_ref();
    let no_movers = |why: &str| {
        VolumePlan::Fail(format!(
            "the volume's copy is in the repository, but this operator cannot fill a volume from it: {why}"
        ))
    };
    match (source, snapshot, copy) {
        (VolumeSource::Snapshot, true, _) => VolumePlan::Snapshot,
        (VolumeSource::Snapshot, false, _) => VolumePlan::Fail(
            "the backup holds no CSI snapshot of this volume: restore with volumeSource Auto or Repository".into(),
        ),
        (VolumeSource::Repository | VolumeSource::Auto, _, Some(copy)) => match movers_off {
            Some(why) if !snapshot || source == VolumeSource::Repository => no_movers(why),
            Some(_) => VolumePlan::Snapshot,
            None if source == VolumeSource::Repository || !snapshot => VolumePlan::Repository(copy),
            None => VolumePlan::SnapshotThenRepository(copy),
        },
        (VolumeSource::Repository, _, None) => VolumePlan::Fail(
            "the backup holds no repository copy of this volume (a snapshot-only backup, or its copy failed: see the backup's failed items); restore with volumeSource Auto or Snapshot".into(),
        ),
        (VolumeSource::Auto, true, None) => VolumePlan::Snapshot,
        (VolumeSource::Auto, false, None) => VolumePlan::Fail(
            "the backup holds neither a snapshot nor a repository copy of this volume".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(snapshot: bool, copy: bool) -> VolumeSnapshotRecord {
        VolumeSnapshotRecord {
            project: "shop".into(),
            pvc: "data".into(),
            snapshot_handle: snapshot.then(|| "snap-1".into()),
            repository_copy: copy.then(|| VolumeCopyRecord {
                snapshot: "abc".into(),
                stream: "volume.tree".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn auto_takes_the_snapshot_first_with_the_repository_copy_behind_it() {
        let both = record(true, true);
        assert!(matches!(
            volume_plan(VolumeSource::Auto, &both, None),
            VolumePlan::SnapshotThenRepository(copy) if copy.snapshot == "abc"
        ));
        let copy_only = record(false, true);
        assert!(matches!(
            volume_plan(VolumeSource::Auto, &copy_only, None),
            VolumePlan::Repository(_)
        ));
        assert_eq!(
            volume_plan(VolumeSource::Auto, &record(true, false), None),
            VolumePlan::Snapshot
        );
        assert!(matches!(
            volume_plan(VolumeSource::Auto, &record(false, false), None),
            VolumePlan::Fail(_)
        ));
    }

    #[test]
    fn repository_means_the_copy_only_and_says_when_there_is_none() {
        assert!(matches!(
            volume_plan(VolumeSource::Repository, &record(true, true), None),
            VolumePlan::Repository(_)
        ));
        let VolumePlan::Fail(why) =
            volume_plan(VolumeSource::Repository, &record(true, false), None)
        else {
            panic!("no copy")
        };
        assert!(why.contains("snapshot-only"), "{why}");
    }

    #[test]
    fn snapshot_means_the_snapshot_only() {
        assert_eq!(
            volume_plan(VolumeSource::Snapshot, &record(true, true), None),
            VolumePlan::Snapshot
        );
        assert!(matches!(
            volume_plan(VolumeSource::Snapshot, &record(false, true), None),
            VolumePlan::Fail(_)
        ));
    }

    #[test]
    fn without_movers_a_copy_cannot_be_used_and_the_reason_is_named() {
        let off = Some("the operator has no mover image");
        assert_eq!(
            volume_plan(VolumeSource::Auto, &record(true, true), off),
            VolumePlan::Snapshot
        );
        let VolumePlan::Fail(why) = volume_plan(VolumeSource::Auto, &record(false, true), off)
        else {
            panic!("no movers")
        };
        assert!(why.contains("no mover image"), "{why}");
    }
}
