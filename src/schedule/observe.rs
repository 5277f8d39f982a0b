//! Reads a schedule's AccountBackups and turns them into the facts the pure decisions need.

use jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::decide::BackupFacts;
use crate::api::AccountBackup;

/// Label on every AccountBackup a schedule creates: the schedule's name.
pub const SCHEDULE_LABEL: &str = "rewind.dev/schedule";

/// Annotation on every AccountBackup a schedule creates: its slot (RFC 3339, UTC).
pub const SLOT_ANNOTATION: &str = "rewind.dev/slot";

/// The AccountBackups created by schedule `name`, all pages.
pub async fn backups(
    api: &Api<AccountBackup>,
    name: &str,
) -> Result<Vec<AccountBackup>, kube::Error> {
    let mut params = ListParams::default()
        .labels(&format!("{SCHEDULE_LABEL}={name}"))
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
