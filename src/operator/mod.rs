//! Runtime wiring of `rewind run`: configuration, leader election, probes and controllers.

pub mod config;
pub mod http;
pub mod leader;
pub mod logging;
pub mod shutdown;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kube::api::ListParams;
use kube::runtime::events::Recorder;
use kube::{Api, Client};
use tracing::{error, info, warn};

use crate::account_lock::AccountLocks;
use crate::api::AccountBackup;
use crate::archive::store::SnapshotStore;
use crate::context::{Context, StepTimeouts};
use crate::duration::parse_duration;
use crate::metrics::Metrics;
use config::RunArgs;
use http::Readiness;

/// The leader Lease's name in the operator namespace.
pub const LEADER_LEASE: &str = "rewind-operator-leader";

/// How many times the operator tries to open (or create) its repository before it gives up.
const REPOSITORY_OPEN_ATTEMPTS: u32 = 6;

/// Opens the repository at start-up, trying again while the store fails transiently (an object
/// store briefly unreachable must not crash-loop the operator); a wrong key, a foreign or damaged
/// repository fails at once.
pub async fn open_repository(
    url: &str,
    key: &crate::repository::MasterKey,
) -> Result<crate::repository::Repository, crate::repository::RepoError> {
    let mut attempt = 1;
    loop {
        match crate::repository::Repository::open_or_init(url, key).await {
            Err(err) if !err.is_permanent() && attempt < REPOSITORY_OPEN_ATTEMPTS => {
                let wait = Duration::from_secs(2 * u64::from(attempt));
                warn!(error = %err, attempt, retry_in = ?wait, "the repository could not be opened; trying again");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Runs the operator until SIGTERM, or until it loses the leader lease (then it exits non-zero).
pub async fn run(args: RunArgs, store: Arc<dyn SnapshotStore>) -> anyhow::Result<()> {
    let operation_timeout =
        parse_duration(&args.operation_timeout).context("--operation-timeout")?;
    let step_timeouts = StepTimeouts {
        snapshot: parse_duration(&args.snapshot_timeout).context("--snapshot-timeout")?,
        dump: parse_duration(&args.dump_timeout).context("--dump-timeout")?,
        hook: parse_duration(&args.hook_timeout).context("--hook-timeout")?,
    };
    let sync_interval = parse_duration(&args.sync_interval).context("--sync-interval")?;
    let client = Client::try_default()
        .await
        .context("no Kubernetes connection: set KUBECONFIG or run inside a cluster")?;
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("rewind-{}", std::process::id()));
    let metrics = Metrics::default();
    let readiness = Readiness::default();
    let shutdown = shutdown::on_signal();
    let probe_addr = args.probe_addr;
    let probes = tokio::spawn(http::serve(probe_addr, readiness.clone(), metrics.clone()));
    info!(%probe_addr, identity, "serving /healthz, /readyz and /metrics");

    tokio::select! {
        _ = wait_for_crds(&client) => {}
        _ = shutdown.cancelled() => return Ok(()),
    }
    readiness.set_ready(true);

    let timing = leader::LeaseTiming::default();
    if !args.no_leader_election {
        tokio::select! {
            _ = leader::acquire(client.clone(), &args.namespace, LEADER_LEASE, &identity, &timing) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }

    let mut backups = crate::reflectors::BackupReflector::default();
    let movers = config::movers(&args)?;
    match &movers {
        crate::mover::settings::Movers::On { settings, .. } => {
            info!(image = %settings.image, repository = %settings.repository, "volumes are copied into the repository by mover pods");
        }
        crate::mover::settings::Movers::Off(why) => {
            warn!(%why, "volumes are kept as CSI snapshots only");
        }
    }
    let ctx = Arc::new(Context {
        backups: backups.reader(),
        client: client.clone(),
        locks: AccountLocks::new(
            client.clone(),
            &args.namespace,
            &identity,
            !args.no_leader_election,
        ),
        metrics,
        recorder: Recorder::new(client.clone(), Context::reporter(&identity)),
        operation_timeout,
        step_timeouts,
        namespace: args.namespace.clone(),
        backup_limit: crate::backup_limit::RunningLimit::new(usize::from(
            args.max_concurrent_backups,
        )),
        store,
        notifier: args
            .notify_webhook_url_file
            .clone()
            .map(crate::notify::Notifier::new)
            .transpose()?,
        backoff: crate::retry::Backoff::default(),
        movers,
    });
    let backup_changes = backups.subscribe();
    let schedule_wakeups = backups.subscribe();
    let counting =
        crate::reflectors::count_phases(ctx.backups.clone(), ctx.metrics.clone(), shutdown.clone());
    let controllers = futures::future::join(
        counting,
        futures::future::join5(
            backups.run(client.clone(), shutdown.clone()),
            crate::backup::run(ctx.clone(), backup_changes, shutdown.clone()),
            crate::restore::run(ctx.clone(), shutdown.clone()),
            crate::schedule::run(ctx.clone(), schedule_wakeups, shutdown.clone()),
            crate::backup::sync::run(ctx, sync_interval, shutdown.clone()),
        ),
    );
    let lost_lease = async {
        if args.no_leader_election {
            std::future::pending::<()>().await
        } else {
            leader::hold(
                client.clone(),
                &args.namespace,
                LEADER_LEASE,
                &identity,
                &timing,
            )
            .await
        }
    };
    tokio::select! {
        _ = controllers => info!("controllers stopped"),
        _ = lost_lease => {
            error!("lost the leader lease: stopping so another replica can lead");
            probes.abort();
            anyhow::bail!("lost the leader lease");
        }
    }
    probes.abort();
    if !args.no_leader_election
        && let Err(err) =
            leader::release(client.clone(), &args.namespace, LEADER_LEASE, &identity).await
    {
        warn!(error = %err, "releasing the leader lease failed; a standby takes over when it expires");
    }
    info!("stopped");
    Ok(())
}

/// Waits until the AccountBackup CRD is served, logging every 30 s instead of crashing.
async fn wait_for_crds(client: &Client) {
    let api: Api<AccountBackup> = Api::all(client.clone());
    let mut attempts = 0u32;
    loop {
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => return,
            Err(err) => {
                if attempts.is_multiple_of(15) {
                    warn!(error = %err, "the rewind.dev CRDs are not served yet: install them (helm install, or kubectl apply -f crds/); waiting");
                }
            }
        }
        attempts += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
