//! The operator-wide limit on backups Running at once (`--max-concurrent-backups`).
//!
//! The count comes from the cluster (the controller's cache of AccountBackups in phase
//! Running), so a restarted or new leader sees the backups already running. Process memory only
//! closes the gap between writing a Running status and seeing it in the cache: starts claimed
//! here count until the cache shows them, or for [`CLAIM_GRACE`] at most.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kube::runtime::reflector::Store;
use tokio::sync::Mutex;

use crate::api::{AccountBackup, BackupPhase};

/// A claim not yet visible in the cache counts this long at most (a status write that failed).
pub const CLAIM_GRACE: Duration = Duration::from_secs(60);

/// How many backups Running in the cluster count against the limit, besides `me` (pure).
///
/// `claimed` maps backup UIDs this operator has just started to when it did; a claim
/// counts until the cache shows that backup in any phase past Queued, or until it is older
/// than [`CLAIM_GRACE`].
pub fn running_besides<'a>(
    backups: impl IntoIterator<Item = &'a AccountBackup>,
    claimed: &BTreeMap<String, Instant>,
    me: &str,
    now: Instant,
) -> usize {
    let mut counted: BTreeMap<&str, ()> = BTreeMap::new();
    let mut seen_started: BTreeMap<&str, ()> = BTreeMap::new();
    for backup in backups {
        let uid = backup.metadata.uid.as_deref().unwrap_or_default();
        let phase = backup.status.as_ref().and_then(|s| s.phase);
        if !matches!(phase, None | Some(BackupPhase::Queued)) {
            seen_started.insert(uid, ());
        }
        if phase == Some(BackupPhase::Running) && uid != me {
            counted.insert(uid, ());
        }
    }
    for (uid, at) in claimed {
        if uid != me
            && !seen_started.contains_key(uid.as_str())
            && now.saturating_duration_since(*at) < CLAIM_GRACE
        {
            counted.insert(uid, ());
        }
    }
    counted.len()
}

/// The limit, checked and claimed under one lock so two reconciles never both take the last slot.
pub struct RunningLimit {
    limit: usize,
    cache: OnceLock<Store<AccountBackup>>,
    claimed: Mutex<BTreeMap<String, Instant>>,
}

/// The limit is reached: how many run and what the limit is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitReached {
    /// Backups Running now.
    pub running: usize,
    /// The operator's limit.
    pub limit: usize,
}

impl LimitReached {
    /// What a Queued backup shows in `queuedBehind`.
    pub fn behind(&self) -> String {
        // The running count is left out: it changes often, and each change would be a new
        // activity entry and a status write of every queued backup.
        format!(
            "the operator's limit of {} concurrent backups (--max-concurrent-backups)",
            self.limit
        )
    }
}

impl RunningLimit {
    /// A limit of `limit` Running backups (0: none).
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            cache: OnceLock::new(),
            claimed: Mutex::new(BTreeMap::new()),
        }
    }

    /// The limit (0: none).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Connects the controller's cache; until then every start is allowed.
    pub fn watch(&self, cache: Store<AccountBackup>) {
        let _ = self.cache.set(cache);
    }

    /// Whether the limit is reached for `me` now, without claiming anything (a cheap first look).
    pub async fn check(&self, me: &str) -> Result<(), LimitReached> {
        let Some(cache) = self.cache.get() else {
            return Ok(());
        };
        let claimed = self.claimed.lock().await;
        let backups = cache.state();
        let running = running_besides(
            backups.iter().map(AsRef::as_ref),
            &claimed,
            me,
            Instant::now(),
        );
        if crate::schedule::decide::may_start(running, self.limit) {
            Ok(())
        } else {
            Err(LimitReached {
                running,
                limit: self.limit,
            })
        }
    }

    /// Claims a slot for the backup with UID `me`, or says why not.
    pub async fn try_claim(&self, me: &str) -> Result<(), LimitReached> {
        let Some(cache) = self.cache.get() else {
            return Ok(());
        };
        let mut claimed = self.claimed.lock().await;
        let now = Instant::now();
        let backups = cache.state();
        let running = running_besides(backups.iter().map(AsRef::as_ref), &claimed, me, now);
        claimed.retain(|_, at| now.saturating_duration_since(*at) < CLAIM_GRACE);
        if crate::schedule::decide::may_start(running, self.limit) {
            claimed.insert(me.to_string(), now);
            Ok(())
        } else {
            Err(LimitReached {
                running,
                limit: self.limit,
            })
        }
    }

    /// Gives a claim back (the backup did not start after all).
    pub async fn unclaim(&self, me: &str) {
        self.claimed.lock().await.remove(me);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AccountBackupSpec, AccountBackupStatus};

    fn backup(uid: &str, phase: Option<BackupPhase>) -> AccountBackup {
        let spec: AccountBackupSpec =
            serde_json::from_value(serde_json::json!({"account": "acme"})).expect("spec");
        let mut backup = AccountBackup::new(uid, spec);
        backup.metadata.uid = Some(uid.to_string());
        backup.status = phase.map(|phase| AccountBackupStatus {
            phase: Some(phase),
            ..Default::default()
        });
        backup
    }

    #[test]
    fn only_running_backups_count_and_never_the_asker() {
        let backups = [
            backup("a", Some(BackupPhase::Running)),
            backup("b", Some(BackupPhase::Queued)),
            backup("c", Some(BackupPhase::Completed)),
            backup("d", None),
            backup("me", Some(BackupPhase::Running)),
        ];
        let count = running_besides(&backups, &BTreeMap::new(), "me", Instant::now());
        assert_eq!(count, 1);
    }

    #[test]
    fn a_claim_counts_until_the_cache_shows_the_backup_started() {
        let now = Instant::now();
        let claimed = BTreeMap::from([("b".to_string(), now)]);
        let queued = [backup("b", Some(BackupPhase::Queued))];
        assert_eq!(running_besides(&queued, &claimed, "me", now), 1);
        let running = [backup("b", Some(BackupPhase::Running))];
        assert_eq!(running_besides(&running, &claimed, "me", now), 1);
        let finished = [backup("b", Some(BackupPhase::Completed))];
        assert_eq!(running_besides(&finished, &claimed, "me", now), 0);
    }

    #[test]
    fn a_claim_whose_status_write_never_showed_expires() {
        let claimed_at = Instant::now();
        let claimed = BTreeMap::from([("b".to_string(), claimed_at)]);
        let queued = [backup("b", None)];
        let later = claimed_at + CLAIM_GRACE + Duration::from_secs(1);
        assert_eq!(running_besides(&queued, &claimed, "me", claimed_at), 1);
        assert_eq!(running_besides(&queued, &claimed, "me", later), 0);
    }
}
