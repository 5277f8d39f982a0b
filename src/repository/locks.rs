//! Writers and prune exclude each other through lock objects under `locks/`.
//!
//! A writer puts `locks/writer-<id>`, then looks for a fresh prune lock and backs
//! off if one exists. Prune puts `locks/prune-<id>`, then looks for fresh writer
//! locks and backs off. Whichever wrote second sees the other, so a prune never
//! runs beside a writer. Locks are refreshed every minute; one not refreshed for
//! ten minutes belongs to a crashed process and is ignored.

use jiff::Timestamp;

use super::Repository;
use super::error::RepoError;
use super::format::{Lock, names};

/// A lock older than this is stale.
pub const STALE_AFTER_SECONDS: i64 = 600;
/// How often a held lock is refreshed.
pub const REFRESH_SECONDS: u64 = 60;

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
    repo.put_object(name, body).await
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
        let Ok(lock) = serde_json::from_slice::<Lock>(&body) else {
            continue;
        };
        if lock.kind == kind && now - lock.refreshed < STALE_AFTER_SECONDS {
            fresh.push(format!("{} ({})", name, lock.holder));
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
