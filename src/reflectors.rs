//! One watch per kind, shared by every controller that reads it: the backup controller is
//! triggered by it, the schedule controller is woken by it and reads its schedule's backups
//! from it (never a LIST per reconcile), and the running limit counts from it.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::api::AccountBackup;

/// Events a slow subscriber may lag behind before the watch waits for it.
const BUFFER: usize = 1024;

/// The shared cache of every AccountBackup.
pub struct BackupReflector {
    reader: Store<AccountBackup>,
    writer: Writer<AccountBackup>,
}

impl Default for BackupReflector {
    fn default() -> Self {
        let (reader, writer) = reflector::store_shared(BUFFER);
        Self { reader, writer }
    }
}

impl BackupReflector {
    /// A reader of the cache (cheap to clone; empty until the first list arrived).
    pub fn reader(&self) -> Store<AccountBackup> {
        self.reader.clone()
    }

    /// Every change, for one more controller; subscribe before [`BackupReflector::run`].
    pub fn subscribe(&self) -> impl Stream<Item = Arc<AccountBackup>> + Send + 'static {
        // A shared store always hands out subscribers; an empty stream is the harmless fallback.
        match self.writer.subscribe() {
            Some(handle) => handle.boxed(),
            None => futures::stream::empty().boxed(),
        }
    }

    /// Watches AccountBackups and feeds the cache and its subscribers until `shutdown`.
    pub async fn run(self, client: Client, shutdown: CancellationToken) {
        let api: Api<AccountBackup> = Api::all(client);
        let watch = watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .reflect_shared(self.writer)
            .for_each(|event| async move {
                if let Err(err) = event {
                    warn!(error = %err, "watching AccountBackups failed; retrying with backoff");
                }
            });
        tokio::select! {
            _ = watch => {}
            _ = shutdown.cancelled() => {}
        }
    }
}

/// How often the per-phase gauges are recounted from the cache.
const COUNT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);

/// Keeps `rewind_account_backups{phase}` equal to the cache's counts until `shutdown`.
pub async fn count_phases(
    backups: Store<AccountBackup>,
    metrics: crate::metrics::Metrics,
    shutdown: CancellationToken,
) {
    loop {
        metrics.count_phases(
            backups
                .state()
                .iter()
                .map(|b| b.status.as_ref().and_then(|s| s.phase)),
        );
        tokio::select! {
            _ = tokio::time::sleep(COUNT_INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
