//! What a ProjectRestore may do: refusals with what to do, and target namespace names (pure).

pub mod status;
pub mod volume_source;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{AccountBackup, BackupPhase, ProjectRestore, ProjectRestoreStatus, RestorePhase};

/// Why a restore cannot start; each becomes the Ready condition's reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// CamelCase reason.
    pub reason: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

fn refuse(reason: &'static str, message: String) -> Refusal {
    Refusal { reason, message }
}

/// The namespace a project is restored into: the user's choice, else `<project>-restore-<short id>`,
/// shortened to fit a namespace name (63 characters).
pub fn target_namespace(restore: &ProjectRestore, project: &str) -> String {
    if let Some(chosen) = restore.spec.target_namespaces.get(project) {
        return chosen.clone();
    }
    let uid = restore.metadata.uid.clone().unwrap_or_default();
    let short: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(5)
        .collect();
    let suffix = format!("-restore-{short}");
    let room = 63usize.saturating_sub(suffix.len());
    let base: String = project.chars().take(room).collect();
    format!("{}{suffix}", base.trim_end_matches('-'))
}

/// Which projects to restore: the spec's list, or every project of the backup.
pub fn chosen_projects(restore: &ProjectRestore, backup: &AccountBackup) -> Vec<String> {
    if restore.spec.projects.is_empty() {
        backup
            .status
            .iter()
            .flat_map(|s| s.projects.iter().map(|p| p.name.clone()))
            .collect()
    } else {
        restore.spec.projects.clone()
    }
}

/// Whether a namespace name is one a restore may never create: the cluster's own (`default`,
/// `kube-*`) and the operator's.
pub fn is_reserved_namespace(name: &str, operator_namespace: &str) -> bool {
    name == "default" || name.starts_with("kube-") || name == operator_namespace
}

/// Checks a restore against its backup and the namespaces that exist; the targets on success.
pub fn check_restorable(
    restore: &ProjectRestore,
    backup: Option<&AccountBackup>,
    existing_namespaces: &[String],
    operator_namespace: &str,
    now: Timestamp,
) -> Result<BTreeMap<String, String>, Refusal> {
    if let Some(Err(err)) = restore.spec.expire_after.as_ref().map(|after| after.get()) {
        return Err(refuse(
            "InvalidExpireAfter",
            format!("expireAfter: {err}; create a new ProjectRestore with a valid duration"),
        ));
    }
    let Some(backup) = backup else {
        return Err(refuse(
            "BackupNotFound",
            format!(
                "AccountBackup {} does not exist: list the account's backups with `kubectl get ab` and create a new ProjectRestore naming one",
                restore.spec.backup
            ),
        ));
    };
    // spec.account is what admission checked the requester against; the backup's account is
    // what admission checked its creator against (or the repository record, for an import).
    if backup.spec.account != restore.spec.account {
        return Err(refuse(
            "AccountMismatch",
            format!(
                "AccountBackup {} is not a backup of account {}: a restore can only restore its own account's backups; \
                 list them with `kubectl get ab` and create a new ProjectRestore naming one",
                restore.spec.backup, restore.spec.account
            ),
        ));
    }
    let status = backup.status.clone().unwrap_or_default();
    if status.phase == Some(crate::api::BackupPhase::Expired) {
        return Err(refuse(
            "BackupExpired",
            format!(
                "AccountBackup {} has expired and its data was released: pick a newer backup",
                restore.spec.backup
            ),
        ));
    }
    if !status.phase.is_some_and(|p| p.is_restorable()) {
        return Err(refuse(
            "BackupNotRestorable",
            format!(
                "AccountBackup {} is {:?}, not Completed or PartiallyFailed: restore from a finished backup",
                restore.spec.backup,
                status
                    .phase
                    .map(|p| format!("{p:?}"))
                    .unwrap_or_else(|| "new".into())
            ),
        ));
    }
    if let Some(Time(until)) = status.restorable_until
        && until <= now
    {
        return Err(refuse(
            "BackupExpired",
            format!(
                "AccountBackup {} was restorable until {until}: pick a newer backup",
                restore.spec.backup
            ),
        ));
    }
    let in_backup: Vec<&str> = status.projects.iter().map(|p| p.name.as_str()).collect();
    let mut targets = BTreeMap::new();
    for project in chosen_projects(restore, backup) {
        if !in_backup.contains(&project.as_str()) {
            return Err(refuse(
                "ProjectNotInBackup",
                format!(
                    "project {project} is not in AccountBackup {} (it holds: {}): fix spec.projects in a new ProjectRestore",
                    restore.spec.backup,
                    in_backup.join(", ")
                ),
            ));
        }
        let target = target_namespace(restore, &project);
        if is_reserved_namespace(&target, operator_namespace) {
            return Err(refuse(
                "TargetNamespaceReserved",
                format!(
                    "namespace {target} belongs to the cluster or the operator and a restore never writes there: choose another in spec.targetNamespaces"
                ),
            ));
        }
        if let Some((other, _)) = targets.iter().find(|(_, used)| **used == target) {
            return Err(refuse(
                "TargetNamespaceConflict",
                format!(
                    "projects {other} and {project} would both be restored into namespace {target}: give each its own target in spec.targetNamespaces"
                ),
            ));
        }
        if existing_namespaces.contains(&target) {
            return Err(refuse(
                "TargetNamespaceExists",
                format!(
                    "namespace {target} already exists and a restore never writes into an existing namespace: choose another in spec.targetNamespaces"
                ),
            ));
        }
        targets.insert(project, target);
    }
    if targets.is_empty() {
        return Err(refuse(
            "NothingToRestore",
            format!("AccountBackup {} holds no projects", restore.spec.backup),
        ));
    }
    Ok(targets)
}

/// Whether a restore may read `backup`'s records from the repository (pure): only a restorable
/// backup of the restore's own account. A restore that names another account's backup, or one
/// that will be refused anyway, costs no repository read and learns nothing from it.
pub fn reads_all_records(restore: &ProjectRestore, backup: &AccountBackup) -> bool {
    let restorable = matches!(
        backup.status.as_ref().and_then(|s| s.phase),
        Some(BackupPhase::Completed | BackupPhase::PartiallyFailed)
    );
    restorable && backup.spec.account == restore.spec.account
}

/// A Running restore that has run longer than the operation timeout is failed, never left
/// Running for ever.
pub fn running_too_long(status: &ProjectRestoreStatus, now: Timestamp, limit: Duration) -> bool {
    crate::status::past_deadline(status.started_at.as_ref(), now, limit)
}

/// What a finished restore should do about `expireAfter`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinishedDecision {
    /// Past `expiresAt` and not yet expired: delete its namespaces, mark it Expired.
    Expire,
    /// Look again at this time.
    RecheckAt(Timestamp),
    /// Nothing will change on its own (no expiry, or expired already).
    Nothing,
}

/// Decides for a finished restore (pure).
pub fn decide_finished(status: &ProjectRestoreStatus, now: Timestamp) -> FinishedDecision {
    let expired = status
        .conditions
        .iter()
        .any(|c| c.type_ == status::EXPIRED && c.status == "True");
    let finished = matches!(
        status.phase,
        Some(RestorePhase::Completed | RestorePhase::PartiallyFailed)
    );
    match &status.expires_at {
        Some(Time(at)) if finished && !expired && *at <= now => FinishedDecision::Expire,
        Some(Time(at)) if finished && !expired => FinishedDecision::RecheckAt(*at),
        _ => FinishedDecision::Nothing,
    }
}

/// How long to wait until `at`: at least a second, at most an hour (clocks and caches drift).
pub fn wait_until(at: Timestamp, now: Timestamp) -> Duration {
    at.duration_since(now)
        .unsigned_abs()
        .clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Attempts at one create before it counts as the item's failure.
pub const CREATE_ATTEMPTS: u32 = 8;

/// Whether and when a create the API server did not take is tried again (pure): asked to slow
/// down (429, API Priority and Fairness) or failed transiently (5xx, a dropped connection:
/// `code` None) it waits the server's Retry-After, or backs off from 250 ms doubling to 10 s;
/// refused for what it is (400, 403, 422…) it is the item's failure at once.
pub fn create_retry(
    code: Option<u16>,
    attempt: u32,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let transient = match code {
        None => true,
        Some(code) => code == 429 || code >= 500,
    };
    if !transient || attempt >= CREATE_ATTEMPTS {
        return None;
    }
    let backoff = Duration::from_millis(250)
        .saturating_mul(1 << attempt.saturating_sub(1).min(6))
        .min(Duration::from_secs(10));
    Some(retry_after.unwrap_or(backoff).min(Duration::from_secs(30)))
}

/// How many times a dump is streamed into its restored pod when the repository fails.
pub const DUMP_LOAD_ATTEMPTS: u32 = 4;

/// Whether a dump whose load just failed is streamed again, and after how long (pure): only
/// when reading it from the repository failed transiently — opening the stream, or the stream
/// breaking mid-way (an S3 response cut off) — since the restore commands load a whole dump
/// again (pg_restore --clean). A failure of the pod's command or a permanent repository error
/// (wrong key, damaged data) is the item's failure at once. Backs off 2 s, 4 s, 8 s.
pub fn dump_load_retry(attempt: u32, repository_failed: bool, permanent: bool) -> Option<Duration> {
    (repository_failed && !permanent && attempt < DUMP_LOAD_ATTEMPTS)
        .then(|| Duration::from_secs(2u64 << attempt.saturating_sub(1).min(4)))
}

/// The repository snapshot a dump is read from (pure): its own when a worker wrote it, else
/// the backup's (every record made without workers, older ones included).
pub fn dump_snapshot<'a>(
    record: &'a crate::api::DatabaseDumpRecord,
    backup_snapshot: &'a str,
) -> &'a str {
    record.snapshot.as_deref().unwrap_or(backup_snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        AccountBackupSpec, AccountBackupStatus, BackupPhase, ProjectRestoreSpec, ProjectSummary,
    };

    #[test]
    fn a_dump_is_read_from_its_own_snapshot_and_an_older_record_from_the_backups() {
        let old: crate::api::DatabaseDumpRecord = serde_json::from_value(serde_json::json!({
            "project": "shop", "pod": "db-0", "engine": "postgres",
            "stream": "projects/shop/databases/db-0.dump", "bytes": 42, "sha256": "ff",
        }))
        .expect("a record written before workers");
        assert_eq!(dump_snapshot(&old, "backup-snap"), "backup-snap");
        let by_worker = crate::api::DatabaseDumpRecord {
            snapshot: Some("dump-snap".into()),
            ..old
        };
        assert_eq!(dump_snapshot(&by_worker, "backup-snap"), "dump-snap");
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("valid time")
    }

    fn backup(phase: BackupPhase, until: i64, projects: &[&str]) -> AccountBackup {
        let mut backup = AccountBackup::new(
            "nightly",
            AccountBackupSpec {
                account: "acme".into(),
                display_name: None,
                notes: None,
                ttl: "168h".into(),
                volume_snapshot_class_name: None,
                databases: Default::default(),
                volumes: Default::default(),
                token_selector: None,
            },
        );
        backup.status = Some(AccountBackupStatus {
            phase: Some(phase),
            restorable_until: Some(Time(at(until))),
            projects: projects
                .iter()
                .map(|p| ProjectSummary {
                    name: p.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        backup
    }

    fn restore(projects: &[&str], targets: &[(&str, &str)]) -> ProjectRestore {
        let mut restore = ProjectRestore::new(
            "undo",
            ProjectRestoreSpec {
                account: "acme".into(),
                backup: "nightly".into(),
                projects: projects.iter().map(|p| p.to_string()).collect(),
                target_namespaces: targets
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                expire_after: None,
                restore_databases: true,
                restore_volumes: true,
                volume_source: Default::default(),
            },
        );
        restore.metadata.uid = Some("7f3a9c21-0000-4000-8000-000000000000".into());
        restore
    }

    #[test]
    fn default_target_is_project_restore_short_id() {
        assert_eq!(
            target_namespace(&restore(&[], &[]), "shop"),
            "shop-restore-7f3a9"
        );
    }

    #[test]
    fn long_project_names_are_shortened_to_a_valid_namespace() {
        let long = "a".repeat(70);
        let target = target_namespace(&restore(&[], &[]), &long);
        assert!(target.len() <= 63, "{target}");
        assert!(target.ends_with("-restore-7f3a9"));
    }

    #[test]
    fn restore_refuses_existing_target_namespace() {
        let err = check_restorable(
            &restore(&["shop"], &[("shop", "shop-copy")]),
            Some(&backup(BackupPhase::Completed, 100, &["shop"])),
            &["shop-copy".into()],
            "rewind-system",
            at(10),
        )
        .expect_err("exists");
        assert_eq!(err.reason, "TargetNamespaceExists");
    }

    #[test]
    fn restore_refuses_a_backup_that_is_not_finished_or_is_expired_or_missing() {
        let r = restore(&[], &[]);
        assert_eq!(
            check_restorable(
                &r,
                Some(&backup(BackupPhase::Running, 100, &["shop"])),
                &[],
                "rewind-system",
                at(10)
            )
            .expect_err("running")
            .reason,
            "BackupNotRestorable"
        );
        assert_eq!(
            check_restorable(
                &r,
                Some(&backup(BackupPhase::Completed, 100, &["shop"])),
                &[],
                "rewind-system",
                at(100)
            )
            .expect_err("expired")
            .reason,
            "BackupExpired"
        );
        assert_eq!(
            check_restorable(&r, None, &[], "rewind-system", at(10))
                .expect_err("missing")
                .reason,
            "BackupNotFound"
        );
    }

    #[test]
    fn restore_refuses_a_project_not_in_the_backup_naming_what_it_holds() {
        let err = check_restorable(
            &restore(&["blog"], &[]),
            Some(&backup(BackupPhase::PartiallyFailed, 100, &["shop"])),
            &[],
            "rewind-system",
            at(10),
        )
        .expect_err("absent");
        assert_eq!(err.reason, "ProjectNotInBackup");
        assert!(err.message.contains("it holds: shop"), "{}", err.message);
    }

    #[test]
    fn restore_refuses_a_backup_of_another_account() {
        let mut other = backup(BackupPhase::Completed, 100, &["shop"]);
        other.spec.account = "victim".into();
        let err = check_restorable(
            &restore(&[], &[]),
            Some(&other),
            &[],
            "rewind-system",
            at(10),
        )
        .expect_err("another account's backup");
        assert_eq!(err.reason, "AccountMismatch");
        assert!(
            err.message.contains("not a backup of account acme"),
            "{}",
            err.message
        );
    }

    #[test]
    fn restore_refuses_system_and_operator_namespaces_as_targets() {
        for target in ["default", "kube-system", "kube-public", "rewind-system"] {
            let err = check_restorable(
                &restore(&["shop"], &[("shop", target)]),
                Some(&backup(BackupPhase::Completed, 100, &["shop"])),
                &[],
                "rewind-system",
                at(10),
            )
            .expect_err(target);
            assert_eq!(err.reason, "TargetNamespaceReserved", "{target}");
        }
    }

    #[test]
    fn restore_refuses_two_projects_mapped_to_one_target() {
        let err = check_restorable(
            &restore(&[], &[("blog", "copy"), ("shop", "copy")]),
            Some(&backup(BackupPhase::Completed, 100, &["blog", "shop"])),
            &[],
            "rewind-system",
            at(10),
        )
        .expect_err("one target for two projects");
        assert_eq!(err.reason, "TargetNamespaceConflict");
    }

    #[test]
    fn all_projects_of_the_backup_are_restored_by_default() {
        let targets = check_restorable(
            &restore(&[], &[]),
            Some(&backup(BackupPhase::Completed, 100, &["blog", "shop"])),
            &[],
            "rewind-system",
            at(10),
        )
        .expect("ok");
        assert_eq!(
            targets.keys().cloned().collect::<Vec<_>>(),
            vec!["blog".to_string(), "shop".to_string()]
        );
    }

    #[test]
    fn a_finished_restore_expires_once_when_expire_after_passes() {
        let mut status = ProjectRestoreStatus {
            phase: Some(RestorePhase::Completed),
            expires_at: Some(Time(at(1000))),
            ..ProjectRestoreStatus::default()
        };
        assert_eq!(
            decide_finished(&status, at(999)),
            FinishedDecision::RecheckAt(at(1000))
        );
        assert_eq!(decide_finished(&status, at(1000)), FinishedDecision::Expire);
        crate::status::set_condition(
            &mut status.conditions,
            status::EXPIRED,
            true,
            "ExpireAfterPassed",
            "deleted",
            None,
            at(1000),
        );
        assert_eq!(
            decide_finished(&status, at(5000)),
            FinishedDecision::Nothing,
            "expired once"
        );
        let running = ProjectRestoreStatus {
            phase: Some(RestorePhase::Running),
            expires_at: Some(Time(at(1000))),
            ..ProjectRestoreStatus::default()
        };
        assert_eq!(
            decide_finished(&running, at(5000)),
            FinishedDecision::Nothing
        );
        assert_eq!(
            decide_finished(&ProjectRestoreStatus::default(), at(5000)),
            FinishedDecision::Nothing
        );
    }

    #[test]
    fn a_restore_running_past_the_operation_timeout_is_failed() {
        let status = ProjectRestoreStatus {
            started_at: Some(Time(at(0))),
            ..ProjectRestoreStatus::default()
        };
        let limit = std::time::Duration::from_secs(3600);
        assert!(!running_too_long(&status, at(3600), limit));
        assert!(running_too_long(&status, at(3601), limit));
        assert!(!running_too_long(
            &ProjectRestoreStatus::default(),
            at(99999),
            limit
        ));
    }

    #[test]
    fn an_expire_after_that_is_no_duration_is_refused_before_anything_is_created() {
        let mut restore = ProjectRestore::new(
            "r",
            serde_json::from_value(serde_json::json!({
                "account": "acme", "backup": "nightly",
                "expireAfter": "99999999999999999999h"
            }))
            .expect("spec"),
        );
        restore.metadata.uid = Some("u".into());
        let refusal =
            check_restorable(&restore, None, &[], "rewind-system", at(0)).expect_err("refused");
        assert_eq!(refusal.reason, "InvalidExpireAfter");
        assert!(refusal.message.contains("99999999999999999999h"));
    }

    #[test]
    fn a_create_asked_to_slow_down_waits_and_a_refused_one_fails_at_once() {
        let second = std::time::Duration::from_secs(1);
        assert_eq!(
            create_retry(Some(429), 1, Some(second)),
            Some(second),
            "Retry-After honoured"
        );
        assert_eq!(
            create_retry(Some(429), 1, None),
            Some(std::time::Duration::from_millis(250))
        );
        assert_eq!(
            create_retry(Some(503), 3, None),
            Some(std::time::Duration::from_secs(1))
        );
        assert_eq!(
            create_retry(None, 2, None),
            Some(std::time::Duration::from_millis(500))
        );
        assert_eq!(
            create_retry(Some(429), 7, None),
            Some(std::time::Duration::from_secs(10))
        );
        assert_eq!(
            create_retry(Some(429), CREATE_ATTEMPTS, None),
            None,
            "not for ever"
        );
        for refused in [400, 403, 404, 422] {
            assert_eq!(create_retry(Some(refused), 1, None), None);
        }
    }

    #[test]
    fn a_restore_naming_another_accounts_backup_never_reads_its_records() {
        let theirs = backup(BackupPhase::Completed, 10_000, &["shop"]);
        let mut restore = restore(&[], &[("shop", "shop-copy")]);
        assert!(
            reads_all_records(&restore, &theirs),
            "its own account's backup"
        );
        restore.spec.account = "mallory".into();
        assert!(
            !reads_all_records(&restore, &theirs),
            "another account's backup"
        );
        restore.spec.account = theirs.spec.account.clone();
        let failed = backup(BackupPhase::Failed, 10_000, &["shop"]);
        assert!(
            !reads_all_records(&restore, &failed),
            "a backup that cannot be restored"
        );
    }

    #[test]
    fn a_dump_is_streamed_again_only_when_the_repository_failed_transiently() {
        assert_eq!(
            dump_load_retry(1, true, false),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            dump_load_retry(3, true, false),
            Some(Duration::from_secs(8))
        );
        assert_eq!(dump_load_retry(DUMP_LOAD_ATTEMPTS, true, false), None);
        assert_eq!(dump_load_retry(1, true, true), None, "a permanent error");
        assert_eq!(
            dump_load_retry(1, false, false),
            None,
            "the pod's command failed"
        );
    }
}
