//! Writers and prune exclude each other through lock objects under `locks/`.
//!
//! A writer puts `locks/writer-<id>`, then looks for a fresh prune lock and backs
//! off if one exists. Prune puts `locks/prune-<id>`, then looks for fresh writer
//! locks and backs off. Whichever wrote second sees the other, so a prune never
//! runs beside a writer. Locks are refreshed every minute; one not refreshed for
//! ten minutes belongs to a crashed process and is ignored.
//!
//! A lock is sealed with the repository's encryption key, its object name as context: whoever
//! can write to the bucket but holds no key cannot forge one (a future-dated prune lock would
//! otherwise block every backup for ever), and a lock copied to another name does not open.
//! An unauthentic lock is ignored with a warning, and so is one dated more than ten minutes
//! ahead (no key holder's clock is that far off).

use jiff::Timestamp;

use super::Repository;
use super::error::RepoError;
use super::format::{Lock, names};

/// A lock older than this is stale: a holder that died (an operator SIGKILLed mid-prune) blocks
/// the other side for at most this long. Six refreshes missed; generous for clock skew.
pub const STALE_AFTER_SECONDS: i64 = 180;
/// How often a held lock is refreshed.
pub const REFRESH_SECONDS: u64 = 30;

fn holder() -> String {
    format!(
        "{}:{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
        std::process::id()
    )
}

/// A held lock; release it with [`HeldLock::release`] (a crash leaves it to go stale).
pub struct HeldLock {
    name: String,
    refresher: tokio::task::JoinHandle<()>,
}

async fn write_lock(repo: &Repository, name: &str, kind: &str) -> Result<(), RepoError> {
    let lock = Lock {
        kind: kind.into(),
        refreshed: Timestamp::now().as_second(),
        holder: holder(),
    };
    let body = serde_json::to_vec(&lock).map_err(|e| RepoError::corrupt(name, e.to_string()))?;
    repo.put_object(name, repo.keys().seal(name.as_bytes(), &body))
        .await
}

/// What a lock object says, as far as it can be trusted (pure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockState {
    /// Authentic and refreshed within the last ten minutes.
    Fresh(Lock),
    /// Authentic but not refreshed for ten minutes: its holder crashed.
    Stale,
    /// Not sealed with this repository's key, or dated more than three minutes ahead: ignored.
    Untrusted(&'static str),
}

/// Judges the lock object `name` holding `body` at `now` (unix seconds).
pub fn judge(repo_keys: &super::crypto::RepoKeys, name: &str, body: &[u8], now: i64) -> LockState {
    let Ok(plain) = repo_keys.open(name.as_bytes(), body) else {
        return LockState::Untrusted("not sealed with this repository's key");
    };
    let Ok(lock) = serde_json::from_slice::<Lock>(&plain) else {
        return LockState::Untrusted("not a lock");
    };
    if lock.refreshed - now > STALE_AFTER_SECONDS {
        return LockState::Untrusted("dated more than three minutes ahead");
    }
    if now - lock.refreshed < STALE_AFTER_SECONDS {
        LockState::Fresh(lock)
    } else {
        LockState::Stale
    }
}

/// Fresh locks of `kind` other than `except`.
async fn fresh_locks(
    repo: &Repository,
    kind: &str,
    except: &str,
) -> Result<Vec<String>, RepoError> {
    let now = Timestamp::now().as_second();
    let mut fresh = Vec::new();
    for (name, _, _) in repo.list_names("locks").await? {
        if name == except {
            continue;
        }
        let Ok(body) = repo.get_object(&name).await else {
            continue;
        };
        match judge(repo.keys(), &name, &body, now) {
            LockState::Fresh(lock) if lock.kind == kind => {
                fresh.push(format!("{} ({})", name, lock.holder));
            }
            LockState::Untrusted(why) => {
                tracing::warn!(lock = %name, why, "ignoring a lock object in the repository that Rewind did not write");
            }
            LockState::Fresh(_) | LockState::Stale => {}
        }
    }
    Ok(fresh)
}

/// Takes a lock of `kind` unless a fresh lock of `conflicting` exists.
pub async fn acquire(
    repo: &Repository,
    kind: &str,
    conflicting: &str,
) -> Result<HeldLock, RepoError> {
    let mut id = [0u8; 8];
    rand::fill(&mut id[..]);
    let name = names::lock(&format!("{kind}-{}", hex::encode(id)));
    write_lock(repo, &name, kind).await?;
    let others = fresh_locks(repo, conflicting, &name).await?;
    if !others.is_empty() {
        repo.delete_object(&name).await?;
        return Err(RepoError::Busy(format!(
            "{conflicting} running: {}",
            others.join(", ")
        )));
    }
    let refresh_repo = repo.clone();
    let refresh_name = name.clone();
    let kind = kind.to_string();
    let refresher = tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(REFRESH_SECONDS)).await;
            let _ = write_lock(&refresh_repo, &refresh_name, &kind).await;
        }
    });
    Ok(HeldLock { name, refresher })
}

impl HeldLock {
    /// Removes the lock.
    pub async fn release(self, repo: &Repository) -> Result<(), RepoError> {
        self.refresher.abort();
        repo.delete_object(&self.name).await
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::crypto::RepoKeys;

    fn sealed(keys: &RepoKeys, name: &str, kind: &str, refreshed: i64) -> Vec<u8> {
        let lock = Lock {
            kind: kind.into(),
            refreshed,
            holder: "host:1".into(),
        };
        keys.seal(name.as_bytes(), &serde_json::to_vec(&lock).expect("json"))
    }

    #[test]
    fn only_a_lock_sealed_with_the_repository_key_under_its_own_name_counts() {
        let keys = RepoKeys::generate();
        let now = 1_000_000;
        let name = "locks/prune-01";
        assert!(matches!(
            judge(&keys, name, &sealed(&keys, name, "prune", now - 5), now),
            LockState::Fresh(_)
        ));
        assert_eq!(
            judge(&keys, name, &sealed(&keys, name, "prune", now - 181), now),
            LockState::Stale
        );
        // Someone with bucket access but no key: a plain JSON lock, far in the future.
        let forged = serde_json::to_vec(&Lock {
            kind: "prune".into(),
            refreshed: now + 10 * 365 * 86400,
            holder: "attacker".into(),
        })
        .expect("json");
        assert!(matches!(
            judge(&keys, name, &forged, now),
            LockState::Untrusted(_)
        ));
        // Another repository's key, or a real lock copied under another name.
        let other = RepoKeys::generate();
        assert!(matches!(
            judge(&keys, name, &sealed(&other, name, "prune", now), now),
            LockState::Untrusted(_)
        ));
        assert!(matches!(
            judge(
                &keys,
                "locks/prune-02",
                &sealed(&keys, name, "prune", now),
                now
            ),
            LockState::Untrusted(_)
        ));
        // Even an authentic lock dated far ahead is not trusted to block writers.
        assert!(matches!(
            judge(&keys, name, &sealed(&keys, name, "prune", now + 3600), now),
            LockState::Untrusted(_)
        ));
    }
}
