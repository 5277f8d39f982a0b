//! The operator-wide limit on backups Running at once (`--max-concurrent-backups`).
//!
//! The count comes from the cluster (the controller's cache of AccountBackups in phase
//! Running), so a restarted or new leader sees the backups already running. Process memory only
//! closes the gap between writing a Running status and seeing it in the cache: starts claimed
//! here count until the cache shows them, or for [`CLAIM_GRACE`] at most.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::Mutex;

use crate::api::{AccountBackup, BackupPhase};

/// A claim not yet visible in the cache counts this long at most (a status write that failed).
pub const CLAIM_GRACE: Duration = Duration::from_secs(60);

/// How many backups Running in the cluster count against the limit, besides `me` (pure).
///
/// `claimed` maps backup UIDs this operator has just started to when it did; a claim
/// counts until the cache shows that backup in any phase past Queued, or until it is older
/// than [`CLAIM_GRACE`]. `ended` maps UIDs of backups that have just finished to when: they
/// no longer count though the cache may still show them Running.
pub fn running_besides<'a>(
    backups: impl IntoIterator<Item = &'a AccountBackup>,
    claimed: &BTreeMap<String, Instant>,
    ended: &BTreeMap<String, Instant>,
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
        let just_ended = ended
            .get(uid)
            .is_some_and(|at| now.saturating_duration_since(*at) < CLAIM_GRACE);
        if phase == Some(BackupPhase::Running) && uid != me && !just_ended {
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

/// The start of `queuedBehind` of a backup waiting for the limit.
const LIMIT_BEHIND: &str = "the operator's limit of ";

/// The backups waiting for the limit, oldest first, at most `count` (pure): those to wake when
/// a Running backup ends, so a free slot is taken at once rather than at the next recheck.
pub fn next_in_line<'a>(
    backups: impl IntoIterator<Item = &'a AccountBackup>,
    count: usize,
) -> Vec<&'a AccountBackup> {
    let mut waiting: Vec<&AccountBackup> = backups
        .into_iter()
        .filter(|backup| backup.metadata.deletion_timestamp.is_none())
        .filter(|backup| {
            let status = backup.status.as_ref();
            match status.and_then(|s| s.phase) {
                None => true,
                Some(BackupPhase::Queued) => status
                    .and_then(|s| s.queued_behind.as_deref())
                    .is_some_and(|behind| behind.starts_with(LIMIT_BEHIND)),
                _ => false,
            }
        })
        .collect();
    waiting.sort_by(|a, b| {
        let created = |backup: &AccountBackup| {
            backup
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|time| time.0)
        };
        created(a)
            .cmp(&created(b))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    waiting.truncate(count);
    waiting
}

/// The limit, checked and claimed under one lock so two reconciles never both take the last slot.
pub struct RunningLimit {
    limit: usize,
    cache: OnceLock<Store<AccountBackup>>,
    waker: OnceLock<tokio::sync::mpsc::UnboundedSender<ObjectRef<AccountBackup>>>,
    claimed: Mutex<BTreeMap<String, Instant>>,
    ended: Mutex<BTreeMap<String, Instant>>,
}

/// The limit is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitReached {
    /// The operator's limit.
    pub limit: usize,
}

impl LimitReached {
    /// What a Queued backup shows in `queuedBehind`.
    pub fn behind(&self) -> String {
        // No running count: it changes often, and each change would be a new activity entry
        // and a status write of every queued backup.
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
            waker: OnceLock::new(),
            claimed: Mutex::new(BTreeMap::new()),
            ended: Mutex::new(BTreeMap::new()),
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

    /// Where to send backups that should be reconciled now (the controller's extra trigger).
    pub fn wake_with(&self, waker: tokio::sync::mpsc::UnboundedSender<ObjectRef<AccountBackup>>) {
        let _ = self.waker.set(waker);
    }

    /// The Running backup `uid` ended (its final status is written): it stops counting at once,
    /// and the oldest backups waiting for the limit are woken.
    pub async fn slot_freed(&self, uid: &str) {
        {
            let mut ended = self.ended.lock().await;
            let now = Instant::now();
            ended.retain(|_, at| now.saturating_duration_since(*at) < CLAIM_GRACE);
            ended.insert(uid.to_string(), now);
        }
        let (Some(cache), Some(waker)) = (self.cache.get(), self.waker.get()) else {
            return;
        };
        if self.limit == 0 {
            return;
        }
        let backups = cache.state();
        for backup in next_in_line(backups.iter().map(AsRef::as_ref), self.limit) {
            let _ = waker.send(ObjectRef::from_obj(backup));
        }
    }

    /// Whether the limit is reached for `me` now, without claiming anything (a cheap first look).
    pub async fn check(&self, me: &str) -> Result<(), LimitReached> {
        self.admit(me, false).await
    }

    /// Claims a slot for the backup with UID `me`, or says why not.
    pub async fn try_claim(&self, me: &str) -> Result<(), LimitReached> {
        self.admit(me, true).await
    }

    /// Counts what runs besides `me` and, when a slot is free and `claim` is set, claims it —
    /// all under the claims' lock, so two reconciles never both take the last slot.
    async fn admit(&self, me: &str, claim: bool) -> Result<(), LimitReached> {
        let Some(cache) = self.cache.get() else {
            return Ok(());
        };
        let mut claimed = self.claimed.lock().await;
        let ended = self.ended.lock().await;
        let now = Instant::now();
        let backups = cache.state();
        let running = running_besides(backups.iter().map(AsRef::as_ref), &claimed, &ended, me, now);
        if !may_start(running, self.limit) {
            return Err(LimitReached { limit: self.limit });
        }
        if claim {
            claimed.retain(|_, at| now.saturating_duration_since(*at) < CLAIM_GRACE);
            claimed.insert(me.to_string(), now);
        }
        Ok(())
    }

    /// Gives a claim back (the backup did not start after all).
    pub async fn unclaim(&self, me: &str) {
        self.claimed.lock().await.remove(me);
    }
}

/// Whether one more backup may start given how many run cluster-wide (`limit` 0: no limit).
pub fn may_start(running: usize, limit: usize) -> bool {
    limit == 0 || running < limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_limit_holds_backups_at_the_limit() {
        assert!(may_start(9, 10));
        assert!(!may_start(10, 10));
        assert!(may_start(1000, 0));
    }
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
    fn the_oldest_backups_waiting_for_the_limit_are_next_in_line() {
        let at = |second: i64| {
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::from_second(second).expect("time"),
            )
        };
        let mut waiting_long = backup("long", Some(BackupPhase::Queued));
        waiting_long.metadata.creation_timestamp = Some(at(10));
        if let Some(status) = waiting_long.status.as_mut() {
            status.queued_behind = Some(LimitReached { limit: 10 }.behind());
        }
        let mut new = backup("new", None);
        new.metadata.creation_timestamp = Some(at(20));
        let mut behind_account = backup("account", Some(BackupPhase::Queued));
        behind_account.metadata.creation_timestamp = Some(at(5));
        if let Some(status) = behind_account.status.as_mut() {
            status.queued_behind = Some("AccountBackup other".into());
        }
        let running = backup("running", Some(BackupPhase::Running));
        let backups = [new, running, behind_account, waiting_long];
        let names: Vec<String> = next_in_line(&backups, 10)
            .iter()
            .map(|b| b.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, ["long", "new"]);
        assert_eq!(next_in_line(&backups, 1).len(), 1);
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
        let count = running_besides(
            &backups,
            &BTreeMap::new(),
            &BTreeMap::new(),
            "me",
            Instant::now(),
        );
        assert_eq!(count, 1);
    }

    #[test]
    fn a_claim_counts_until_the_cache_shows_the_backup_started() {
        let now = Instant::now();
        let claimed = BTreeMap::from([("b".to_string(), now)]);
        let queued = [backup("b", Some(BackupPhase::Queued))];
        assert_eq!(
            running_besides(&queued, &claimed, &BTreeMap::new(), "me", now),
            1
        );
        let running = [backup("b", Some(BackupPhase::Running))];
        assert_eq!(
            running_besides(&running, &claimed, &BTreeMap::new(), "me", now),
            1
        );
        let finished = [backup("b", Some(BackupPhase::Completed))];
        assert_eq!(
            running_besides(&finished, &claimed, &BTreeMap::new(), "me", now),
            0
        );
    }

    #[test]
    fn a_backup_that_just_ended_stops_counting_before_the_cache_shows_it() {
        let now = Instant::now();
        let stale = [backup("b", Some(BackupPhase::Running))];
        let ended = BTreeMap::from([("b".to_string(), now)]);
        assert_eq!(
            running_besides(&stale, &BTreeMap::new(), &BTreeMap::new(), "me", now),
            1
        );
        assert_eq!(
            running_besides(&stale, &BTreeMap::new(), &ended, "me", now),
            0
        );
    }

    #[test]
    fn a_claim_whose_status_write_never_showed_expires() {
        let claimed_at = Instant::now();
        let claimed = BTreeMap::from([("b".to_string(), claimed_at)]);
        let queued = [backup("b", None)];
        let later = claimed_at + CLAIM_GRACE + Duration::from_secs(1);
        assert_eq!(
            running_besides(&queued, &claimed, &BTreeMap::new(), "me", claimed_at),
            1
        );
        assert_eq!(
            running_besides(&queued, &claimed, &BTreeMap::new(), "me", later),
            0
        );
    }
}
