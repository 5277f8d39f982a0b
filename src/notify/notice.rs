//! What a webhook receives: a small JSON document per finished backup or restore — names,
//! outcome, times, sizes and the Ready message; never a secret value. Pure.

use serde_json::{Value, json};

use crate::api::{AccountBackup, NotificationStatus, ProjectRestore};

/// A kind whose finished operations are notified.
pub trait Notified {
    /// Whether this object's outcome is notified at all.
    fn wants_notice(&self) -> bool {
        true
    }
    /// What the webhook receives for outcome `phase`.
    fn notice(&self, phase: &str) -> Value;
    /// The delivery recorded so far.
    fn notification(&self) -> Option<NotificationStatus>;
}

impl Notified for AccountBackup {
    /// Backups the sync imported from the repository finished long ago: not notified.
    fn wants_notice(&self) -> bool {
        !self
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(crate::api::IMPORTED_FROM_ANNOTATION))
    }

    fn notice(&self, phase: &str) -> Value {
        of_backup(self, phase)
    }

    fn notification(&self) -> Option<NotificationStatus> {
        self.status.as_ref().and_then(|s| s.notification.clone())
    }
}

impl Notified for ProjectRestore {
    fn notice(&self, phase: &str) -> Value {
        of_restore(self, phase)
    }

    fn notification(&self) -> Option<NotificationStatus> {
        self.status.as_ref().and_then(|s| s.notification.clone())
    }
}

fn ready_message(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> &str {
    conditions
        .iter()
        .find(|c| c.type_ == crate::status::READY)
        .map_or("", |c| c.message.as_str())
}

/// The notice of a finished AccountBackup.
pub fn of_backup(backup: &AccountBackup, phase: &str) -> Value {
    let status = backup.status.clone().unwrap_or_default();
    json!({
        "kind": "AccountBackup",
        "name": backup.metadata.name,
        "uid": backup.metadata.uid,
        "account": backup.spec.account,
        "phase": phase,
        "message": ready_message(&status.conditions),
        "displayName": backup.spec.display_name,
        "notes": backup.spec.notes,
        "requestedBy": status.requested_by,
        "startedAt": status.started_at.map(|t| t.0.to_string()),
        "completedAt": status.completed_at.map(|t| t.0.to_string()),
        "restorableUntil": status.restorable_until.map(|t| t.0.to_string()),
        "size": status.size.map(|s| s.bytes),
        "logicalSize": status.logical_size.map(|s| s.bytes),
        "projects": status.projects.iter().map(|p| &p.name).collect::<Vec<_>>(),
        "failedItems": crate::status::item_count(&status.failed),
    })
}

/// The notice of a finished ProjectRestore.
pub fn of_restore(restore: &ProjectRestore, phase: &str) -> Value {
    let status = restore.status.clone().unwrap_or_default();
    json!({
        "kind": "ProjectRestore",
        "name": restore.metadata.name,
        "uid": restore.metadata.uid,
        "account": restore.spec.account,
        "backup": restore.spec.backup,
        // Stamped by admission with the authenticated user (docs/security.md).
        "requestedBy": restore
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::api::REQUESTED_BY_ANNOTATION)),
        "phase": phase,
        "message": ready_message(&status.conditions),
        "startedAt": status.started_at.map(|t| t.0.to_string()),
        "completedAt": status.completed_at.map(|t| t.0.to_string()),
        "expiresAt": status.expires_at.map(|t| t.0.to_string()),
        "targetNamespaces": status.target_namespaces,
        "failedItems": crate::status::item_count(&status.failed),
        "regeneratedTokens": status.regenerated_tokens.len(),
        "warnings": status.warnings.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AccountBackupSpec, AccountBackupStatus, BackupPhase};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    #[test]
    fn a_backup_notice_names_the_outcome_and_carries_no_secret_material() {
        let mut backup = AccountBackup::new(
            "nightly",
            serde_json::from_value::<AccountBackupSpec>(json!({"account": "acme"})).expect("spec"),
        );
        backup.status = Some(AccountBackupStatus {
            phase: Some(BackupPhase::Failed),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: "NoProjects".into(),
                message: "no namespace is labelled rewind.dev/account=acme".into(),
                observed_generation: None,
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    jiff::Timestamp::UNIX_EPOCH,
                ),
            }],
            ..Default::default()
        });
        let phase = BackupPhase::Failed.as_str();
        assert_eq!(phase, "Failed");
        let notice = of_backup(&backup, phase);
        assert_eq!(notice["kind"], "AccountBackup");
        assert_eq!(notice["name"], "nightly");
        assert_eq!(notice["account"], "acme");
        assert_eq!(notice["phase"], "Failed");
        assert_eq!(
            notice["message"],
            "no namespace is labelled rewind.dev/account=acme"
        );
        let keys: Vec<&String> = notice.as_object().expect("object").keys().collect();
        assert!(
            keys.iter()
                .all(|k| !k.to_lowercase().contains("secret") && !k.contains("key"))
        );
    }
}
