//! Backup sync: AccountBackup objects rebuilt from the repository after they were lost.
//!
//! Every snapshot records what its backup produced (stream [`OUTCOME_STREAM`]). When a
//! repository holds a snapshot whose AccountBackup is gone — the cluster was rebuilt, the
//! object was removed without its finalizer — the sync creates the object again, labelled
//! `rewind.dev/imported=true` and annotated with the snapshot id; the backup controller then
//! fills its status from the snapshot instead of taking a backup, so it can be restored.

use crate::api::{IMPORTED_FROM_ANNOTATION, IMPORTED_LABEL};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{ACCOUNT_LABEL, AccountBackup, AccountBackupSpec};
use crate::archive::layout::{OUTCOME_STREAM, SCHEDULE_METADATA, SPEC_METADATA};
use crate::archive::store::StoredSnapshot;
use crate::context::Context;

/// Why the operator will not import `snapshot_id` into the AccountBackup `backup` of `account`
/// (pure), or None when the repository's own record says this snapshot is that backup: the
/// snapshot exists and records the same backup name and the same account. A tenant who copies
/// another account's snapshot id into an annotation gets a refusal, never the data.
pub fn import_refusal(
    snapshots: &[StoredSnapshot],
    snapshot_id: &str,
    backup: &str,
    account: &str,
) -> Option<String> {
    let Some(snapshot) = snapshots.iter().find(|s| s.id == snapshot_id) else {
        return Some(format!(
            "the repository has no snapshot {snapshot_id}: only the operator imports backups, from its own records"
        ));
    };
    let recorded = |key: &str| snapshot.metadata.get(key).map(String::as_str);
    if recorded("account") != Some(account) || recorded("backup") != Some(backup) {
        return Some(format!(
            "repository snapshot {snapshot_id} is not a backup named {backup} of account {account}: \
             only the operator imports backups, each under the name and account the repository records"
        ));
    }
    None
}

/// An AccountBackup to recreate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Import {
    /// The backup's name (as it was).
    pub name: String,
    /// The snapshot it stands for.
    pub snapshot_id: String,
    /// The snapshot's metadata (account, notes, ttl, schedule ...).
    pub metadata: BTreeMap<String, String>,
}

/// Which snapshots have no AccountBackup (pure). `existing` must be listed BEFORE the snapshots:
/// a backup deleted through its finalizer releases its snapshot before the object goes, so a
/// name missing from an earlier object list never meets that snapshot in a later snapshot list.
///
/// Only snapshots that record their outcome, account and backup name qualify; when several
/// snapshots claim one name, the newest wins.
pub fn plan_imports(snapshots: &[StoredSnapshot], existing: &BTreeSet<String>) -> Vec<Import> {
    let mut newest: BTreeMap<&str, &StoredSnapshot> = BTreeMap::new();
    for snapshot in snapshots {
        let (Some(name), Some(_account)) = (
            snapshot.metadata.get("backup"),
            snapshot.metadata.get("account"),
        ) else {
            continue;
        };
        if name.is_empty()
            || existing.contains(name)
            || !snapshot.streams.iter().any(|s| s == OUTCOME_STREAM)
        {
            continue;
        }
        match newest.get(name.as_str()) {
            Some(kept) if kept.created >= snapshot.created => {}
            _ => {
                newest.insert(name, snapshot);
            }
        }
    }
    newest
        .into_iter()
        .map(|(name, snapshot)| Import {
            name: name.to_string(),
            snapshot_id: snapshot.id.clone(),
            metadata: snapshot.metadata.clone(),
        })
        .collect()
}

/// The AccountBackup object an import creates (status comes from the controller).
pub fn imported_object(import: &Import) -> AccountBackup {
    let meta = &import.metadata;
    let account = meta.get("account").cloned().unwrap_or_default();
    let mut labels = BTreeMap::from([
        (ACCOUNT_LABEL.to_string(), account.clone()),
        (IMPORTED_LABEL.to_string(), "true".to_string()),
    ]);
    if let Some(schedule) = meta.get(SCHEDULE_METADATA) {
        labels.insert(crate::api::SCHEDULE_LABEL.to_string(), schedule.clone());
    }
    // The whole spec is recorded; the single fields are for snapshots of older operators.
    let spec = meta
        .get(SPEC_METADATA)
        .and_then(|spec| serde_json::from_str::<AccountBackupSpec>(spec).ok())
        .unwrap_or_else(|| AccountBackupSpec {
            account: account.clone(),
            display_name: meta.get("display-name").cloned(),
            notes: meta.get("notes").cloned(),
            ttl: meta
                .get("ttl")
                .map_or_else(crate::api::default_ttl, |ttl| ttl.as_str().into()),
            volume_snapshot_class_name: None,
            databases: Default::default(),
            volumes: Default::default(),
            token_selector: None,
        });
    AccountBackup {
        metadata: ObjectMeta {
            name: Some(import.name.clone()),
            labels: Some(labels),
            // The requester the repository recorded, not whoever imports it (the admission
            // policy stamps creations that do not name one).
            annotations: Some(BTreeMap::from([
                (
                    IMPORTED_FROM_ANNOTATION.to_string(),
                    import.snapshot_id.clone(),
                ),
                (
                    crate::api::REQUESTED_BY_ANNOTATION.to_string(),
                    meta.get("requested-by")
                        .cloned()
                        .unwrap_or_else(|| "unknown (imported from the repository)".to_string()),
                ),
            ])),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

/// The owner reference that puts an imported backup back under its schedule (pure): only the
/// schedule of the name the repository recorded, and only when that schedule is of the account
/// the repository recorded — a schedule of the same name in another account adopts nothing.
pub fn adopting_schedule(
    import: &Import,
    schedule: &crate::api::BackupSchedule,
) -> Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>> {
    use kube::Resource;
    let recorded_name = import.metadata.get(SCHEDULE_METADATA)?;
    let recorded_account = import.metadata.get("account")?;
    (schedule.meta().name.as_ref() == Some(recorded_name)
        && &schedule.spec.account == recorded_account)
        .then(|| schedule.controller_owner_ref(&()).map(|r| vec![r]))
        .flatten()
}

/// One pass: recreate every AccountBackup the repository knows and the cluster lost.
pub async fn sync_once(ctx: &Context) -> Result<usize, String> {
    let api: Api<AccountBackup> = Api::all(ctx.client.clone());
    // Objects first, then snapshots: see `plan_imports`.
    let existing: BTreeSet<String> = api
        .list_metadata(&ListParams::default())
        .await
        .map_err(|err| format!("listing AccountBackups: {err}"))?
        .items
        .iter()
        .map(|object| object.name_any())
        .collect();
    let snapshots = ctx
        .store
        .list()
        .await
        .map_err(|err| format!("listing repository snapshots: {}", err.message))?;
    let schedules: Api<crate::api::BackupSchedule> = Api::all(ctx.client.clone());
    let mut created = 0;
    for import in plan_imports(&snapshots, &existing) {
        let mut object = imported_object(&import);
        if let Some(name) = import.metadata.get(SCHEDULE_METADATA) {
            let schedule = schedules
                .get_opt(name)
                .await
                .map_err(|err| format!("reading BackupSchedule {name}: {err}"))?;
            object.metadata.owner_references = schedule
                .as_ref()
                .and_then(|schedule| adopting_schedule(&import, schedule));
        }
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {
                created += 1;
                info!(backup = %import.name, account = import.metadata.get("account").map(String::as_str).unwrap_or_default(), snapshot = %import.snapshot_id, "AccountBackup imported from the repository");
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(err) => {
                warn!(backup = %import.name, error = %err, "importing an AccountBackup failed; next sync retries")
            }
        }
    }
    Ok(created)
}

/// Syncs every `interval` until `shutdown` (an interval of zero: never).
pub async fn run(ctx: Arc<Context>, interval: Duration, shutdown: CancellationToken) {
    if interval.is_zero() {
        return;
    }
    loop {
        if let Err(err) = sync_once(&ctx).await {
            warn!(error = %err, "backup sync failed; retrying at the next interval");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// A stored snapshot of one project's manifests, for tests of code that reads listings.
#[cfg(test)]
pub(crate) fn stored_snapshot(
    id: &str,
    created: &str,
    metadata: &[(&str, &str)],
    with_outcome: bool,
) -> StoredSnapshot {
    let mut streams = vec!["projects/shop/manifests.jsonl".to_string()];
    if with_outcome {
        streams.push(OUTCOME_STREAM.to_string());
    }
    StoredSnapshot {
        id: id.into(),
        created: created.into(),
        metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        streams,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(id: &str, created: &str, backup: &str, with_outcome: bool) -> StoredSnapshot {
        stored_snapshot(
            id,
            created,
            &[("account", "acme"), ("backup", backup), ("ttl", "48h")],
            with_outcome,
        )
    }

    #[test]
    fn snapshots_without_an_object_are_imported_and_existing_names_are_left_alone() {
        let snapshots = [
            snapshot("s1", "2026-11-01T03:00:00Z", "daily-1", true),
            snapshot("s2", "2026-11-02T03:00:00Z", "daily-2", true),
        ];
        let existing = BTreeSet::from(["daily-2".to_string()]);
        let imports = plan_imports(&snapshots, &existing);
        assert_eq!(imports.len(), 1);
        assert_eq!(imports[0].name, "daily-1");
        assert_eq!(imports[0].snapshot_id, "s1");
    }

    #[test]
    fn an_import_is_refused_unless_the_repository_records_that_backup_and_account() {
        let recorded = StoredSnapshot {
            id: "s1".into(),
            created: "2026-01-01T00:00:00Z".into(),
            metadata: BTreeMap::from([
                ("account".to_string(), "victim".to_string()),
                ("backup".to_string(), "nightly".to_string()),
            ]),
            streams: vec![OUTCOME_STREAM.to_string()],
        };
        let snapshots = [recorded];
        assert_eq!(import_refusal(&snapshots, "s1", "nightly", "victim"), None);
        let other_account = import_refusal(&snapshots, "s1", "nightly", "attacker")
            .expect("another account's snapshot is refused");
        assert!(other_account.contains("not a backup named nightly of account attacker"));
        assert!(import_refusal(&snapshots, "s1", "copy-of-nightly", "victim").is_some());
        assert!(import_refusal(&snapshots, "s2", "nightly", "victim").is_some());
    }

    #[test]
    fn an_imported_backup_returns_to_its_schedule_only_in_the_recorded_account() {
        let import = Import {
            name: "daily-202601010300".into(),
            snapshot_id: "s1".into(),
            metadata: BTreeMap::from([
                ("account".to_string(), "acme".to_string()),
                (SCHEDULE_METADATA.to_string(), "daily".to_string()),
            ]),
        };
        let schedule = |account: &str| {
            let mut schedule: crate::api::BackupSchedule =
                serde_json::from_value(serde_json::json!({
                    "apiVersion": "rewind.dev/v1alpha1", "kind": "BackupSchedule",
                    "metadata": {"name": "daily", "uid": "schedule-uid"},
                    "spec": {"account": account}
                }))
                .expect("a schedule");
            schedule.metadata.uid = Some("schedule-uid".into());
            schedule
        };
        let owners = adopting_schedule(&import, &schedule("acme")).expect("adopted");
        assert_eq!(owners[0].uid, "schedule-uid");
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(adopting_schedule(&import, &schedule("mallory")), None);
    }

    #[test]
    fn a_snapshot_that_does_not_record_its_outcome_is_not_imported() {
        let snapshots = [snapshot("s1", "2026-11-01T03:00:00Z", "old", false)];
        assert!(plan_imports(&snapshots, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn when_two_snapshots_claim_one_name_the_newest_wins() {
        let snapshots = [
            snapshot("s2", "2026-11-02T03:00:00Z", "same", true),
            snapshot("s1", "2026-11-01T03:00:00Z", "same", true),
        ];
        let imports = plan_imports(&snapshots, &BTreeSet::new());
        assert_eq!(imports.len(), 1);
        assert_eq!(imports[0].snapshot_id, "s2");
    }

    #[test]
    fn an_imported_object_is_labelled_annotated_and_keeps_the_recorded_spec() {
        let mut import = plan_imports(
            &[snapshot("s1", "2026-11-01T03:00:00Z", "daily-1", true)],
            &BTreeSet::new(),
        )
        .remove(0);
        import.metadata.insert(
            SPEC_METADATA.into(),
            r#"{"account":"acme","notes":"before the upgrade","ttl":"72h","databases":{"enabled":false}}"#
                .into(),
        );
        import
            .metadata
            .insert(SCHEDULE_METADATA.into(), "nightly".into());
        let object = imported_object(&import);
        let labels = object.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels[ACCOUNT_LABEL], "acme");
        assert_eq!(labels[IMPORTED_LABEL], "true");
        assert_eq!(labels[crate::api::SCHEDULE_LABEL], "nightly");
        assert_eq!(
            object.metadata.annotations.unwrap_or_default()[IMPORTED_FROM_ANNOTATION],
            "s1"
        );
        assert_eq!(object.spec.ttl, "72h");
        assert_eq!(object.spec.notes.as_deref(), Some("before the upgrade"));
        assert!(!object.spec.databases.enabled);
    }
}
