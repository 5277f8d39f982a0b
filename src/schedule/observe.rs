//! Reads a schedule's AccountBackups (from the shared cache) and turns them into the facts the pure decisions need.

use crate::api::{SCHEDULE_LABEL, SLOT_ANNOTATION};
use jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};

use super::decide::BackupFacts;
use crate::api::{AccountBackup, BackupSchedule};

/// The AccountBackups labelled as the schedule's, from the shared cache (no LIST per
/// reconcile). The label only narrows: [`owned_by`] decides.
pub fn backups(cache: &Store<AccountBackup>, schedule: &BackupSchedule) -> Vec<AccountBackup> {
    let name = schedule.name_any();
    cache
        .state()
        .into_iter()
        .filter(|backup| backup.labels().get(SCHEDULE_LABEL) == Some(&name))
        .map(|backup| (*backup).clone())
        .collect()
}

/// The AccountBackups labelled as the schedule's as the API server has them now (all pages):
/// read only before deleting anything, so retention never decides on a lagging cache.
pub async fn backups_live(
    api: &Api<AccountBackup>,
    schedule: &BackupSchedule,
) -> Result<Vec<AccountBackup>, kube::Error> {
    let mut params = ListParams::default()
        .labels(&format!("{SCHEDULE_LABEL}={}", schedule.name_any()))
        .limit(500);
    let mut all = Vec::new();
    loop {
        let page = api.list(&params).await?;
        let token = page.metadata.continue_.clone();
        all.extend(page.items);
        match token {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(all),
        }
    }
}

/// The backups that really are the schedule's (pure): the label only narrows the list; what
/// decides is the schedule's uid in a controller owner reference and the schedule's own account
/// (which admission lets only that account's owners write). A tenant's AccountBackup labelled,
/// annotated or even owner-referenced to another account's schedule is never one of its slots.
pub fn owned_by(schedule: &BackupSchedule, backups: Vec<AccountBackup>) -> Vec<AccountBackup> {
    let Some(uid) = schedule.metadata.uid.as_deref() else {
        return Vec::new();
    };
    backups
        .into_iter()
        .filter(|backup| {
            backup.spec.account == schedule.spec.account
                && backup
                    .owner_references()
                    .iter()
                    .any(|owner| owner.uid == uid && owner.controller == Some(true))
        })
        .collect()
}

/// What retention needs of one backup (objects being deleted are left out).
pub fn facts(backups: &[AccountBackup]) -> Vec<BackupFacts> {
    backups
        .iter()
        .filter(|b| b.metadata.deletion_timestamp.is_none())
        .map(|b| BackupFacts {
            name: b.name_any(),
            phase: b.status.as_ref().and_then(|s| s.phase),
            created: b
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .unwrap_or(Timestamp::UNIX_EPOCH),
            restorable_until: b
                .status
                .as_ref()
                .and_then(|s| s.restorable_until.as_ref())
                .map(|t| t.0),
        })
        .collect()
}

/// The latest slot recorded on the backups themselves (survives a lost status write).
pub fn latest_slot(backups: &[AccountBackup]) -> Option<Timestamp> {
    backups
        .iter()
        .filter_map(|b| b.annotations().get(SLOT_ANNOTATION))
        .filter_map(|s| s.parse::<Timestamp>().ok())
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AccountBackupSpec, BackupScheduleSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn schedule(account: &str) -> BackupSchedule {
        let mut schedule: BackupSchedule = serde_json::from_value(serde_json::json!({
            "apiVersion": "rewind.dev/v1alpha1", "kind": "BackupSchedule",
            "metadata": {"name": "daily", "uid": "schedule-uid"},
            "spec": {"account": account, "schedule": "@daily"}
        }))
        .expect("a schedule");
        let _: &BackupScheduleSpec = &schedule.spec;
        schedule.metadata.uid = Some("schedule-uid".into());
        schedule
    }

    fn backup(name: &str, account: &str, owner_uid: Option<&str>) -> AccountBackup {
        let mut backup: AccountBackup = AccountBackup::new(
            name,
            serde_json::from_value::<AccountBackupSpec>(serde_json::json!({"account": account}))
                .expect("a spec"),
        );
        backup.metadata.labels = Some([(SCHEDULE_LABEL.to_string(), "daily".to_string())].into());
        backup.metadata.owner_references = owner_uid.map(|uid| {
            vec![OwnerReference {
                api_version: "rewind.dev/v1alpha1".into(),
                kind: "BackupSchedule".into(),
                name: "daily".into(),
                uid: uid.into(),
                controller: Some(true),
                block_owner_deletion: None,
            }]
        });
        backup
    }

    #[test]
    fn a_schedules_slots_are_only_backups_it_owns_in_its_own_account() {
        let mine = backup("mine", "victim", Some("schedule-uid"));
        let labelled_only = backup("labelled", "attacker", None);
        let forged_owner = backup("forged", "attacker", Some("schedule-uid"));
        let other_owner = backup("other", "victim", Some("another-uid"));
        let owned = owned_by(
            &schedule("victim"),
            vec![mine, labelled_only, forged_owner, other_owner],
        );
        let names: Vec<String> = owned.iter().map(|b| b.name_any()).collect();
        assert_eq!(names, vec!["mine".to_string()]);
    }
}
