//! One watch per kind, shared by every controller that reads it: the backup controller is
//! triggered by it, the schedule controller is woken by it and reads its schedule's backups
//! from it (never a LIST per reconcile), and the running limit counts from it.
//!
//! The watch feeds one cache and hands every change (deletions included) to each subscriber on
//! a channel of its own that never blocks the watch: a subscriber that is slow, or stops
//! polling for a while, cannot freeze the cache or the other subscribers. (kube's shared
//! `ReflectHandle` is not used: it waits for an object in the store without a waker when the
//! object was deleted meanwhile — one tenant's create-then-delete would stop it for good.)

use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::api::AccountBackup;

/// The shared cache of every AccountBackup.
pub struct BackupReflector {
    reader: Store<AccountBackup>,
    writer: Writer<AccountBackup>,
    subscribers: Vec<UnboundedSender<Arc<AccountBackup>>>,
}

impl Default for BackupReflector {
    fn default() -> Self {
        let (reader, writer) = reflector::store();
        Self {
            reader,
            writer,
            subscribers: Vec::new(),
        }
    }
}

impl BackupReflector {
    /// A reader of the cache (cheap to clone; empty until the first list arrived).
    pub fn reader(&self) -> Store<AccountBackup> {
        self.reader.clone()
    }

    /// Every change, for one more controller; subscribe before [`BackupReflector::run`].
    pub fn subscribe(&mut self) -> impl Stream<Item = Arc<AccountBackup>> + Send + 'static {
        let (sender, mut receiver) = unbounded_channel();
        self.subscribers.push(sender);
        futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
    }

    /// Watches AccountBackups, feeds the cache, and passes each change to every subscriber,
    /// until `shutdown`.
    pub async fn run(self, client: Client, shutdown: CancellationToken) {
        let api: Api<AccountBackup> = Api::all(client);
        let subscribers = self.subscribers;
        let watch = watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .reflect(self.writer)
            .for_each(|event| {
                match event {
                    Ok(
                        watcher::Event::Apply(object)
                        | watcher::Event::InitApply(object)
                        | watcher::Event::Delete(object),
                    ) => {
                        let object = Arc::new(object);
                        for subscriber in &subscribers {
                            // A subscriber that has stopped (shutdown) is simply skipped.
                            let _ = subscriber.send(object.clone());
                        }
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                    Err(err) => {
                        warn!(error = %err, "watching AccountBackups failed; retrying with backoff")
                    }
                }
                futures::future::ready(())
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
