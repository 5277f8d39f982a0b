//! The AccountBackup reconcile shell: the kube-runtime wiring, then per phase observe → decide → apply → report.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

use super::apply::{
    QUEUED_RECHECK, publish, queue, release_data, release_slot_and_lock, settle_snapshots, write,
};
use super::decide::{FinishedDecision, StartDecision};
use super::error::BackupError;
use super::{apply, decide, execute, observe, progress, resume, sync};
use crate::account_lock::{Holder, LockOutcome};
use crate::api::{
    AccountBackup, AccountBackupStatus, ActivityLevel, BACKUP_FINALIZER, BackupPhase,
};
use crate::archive::layout::{BackupOutcome, read_outcome};
use crate::context::Context;
use crate::metrics::{OperationLabels, ReconcileLabels};

/// How soon a reconcile that found its cached object stale looks again.
const CACHE_CATCH_UP: Duration = Duration::from_secs(1);

/// Reconciles in flight beyond the Running limit: Queued rechecks, deletions and expiries go on
/// while the limit's worth of backups copy.
const SPARE_RECONCILES: u16 = 16;

/// Runs the controller until `shutdown` is cancelled (in-flight reconciles finish first).
/// `changes` is a subscription to the shared AccountBackup watch (`crate::reflectors`).
pub async fn run(
    ctx: Arc<Context>,
    changes: impl futures::Stream<Item = Arc<AccountBackup>> + Send + 'static,
    shutdown: CancellationToken,
) {
    let (waker, woken) = tokio::sync::mpsc::unbounded_channel();
    let controller = Controller::for_shared_stream(changes, ctx.backups.clone()).reconcile_on(
        futures::stream::unfold(woken, |mut woken| async move {
            woken.recv().await.map(|object| (object, woken))
        }),
    );
    ctx.backup_limit.watch(ctx.backups.clone());
    ctx.backup_limit.wake_with(waker);
    let concurrency = match ctx.backup_limit.limit() {
        0 => 0,
        limit => u16::try_from(limit)
            .unwrap_or(u16::MAX)
            .saturating_add(SPARE_RECONCILES),
    };
    controller
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[instrument(skip_all, fields(backup = %backup.name_any(), account = %backup.spec.account))]
async fn reconcile(backup: Arc<AccountBackup>, ctx: Arc<Context>) -> Result<Action, BackupError> {
    let api: Api<AccountBackup> = Api::all(ctx.client.clone());
    let uid = backup.metadata.uid.clone().unwrap_or_default();
    let result = finalizer(&api, BACKUP_FINALIZER, backup, |event| async {
        match event {
            FinalizerEvent::Apply(backup) => apply(backup, &ctx).await,
            FinalizerEvent::Cleanup(backup) => cleanup(backup, &ctx).await,
        }
    })
    .await
    .map_err(|err| match err {
        kube::runtime::finalizer::Error::ApplyFailed(err)
        | kube::runtime::finalizer::Error::CleanupFailed(err) => err,
        other => BackupError::Finalizer(other.to_string()),
    });
    let (outcome, category) = match &result {
        Ok(_) => {
            ctx.backoff.succeeded(&uid);
            ("ok", "none")
        }
        Err(err) => ("error", err.category()),
    };
    ctx.metrics
        .reconciles
        .get_or_create(&ReconcileLabels {
            controller: "accountbackup",
            result: outcome,
            category,
        })
        .inc();
    result
}

fn error_policy(backup: Arc<AccountBackup>, error: &BackupError, ctx: Arc<Context>) -> Action {
    let uid = backup.metadata.uid.clone().unwrap_or_default();
    let status = backup.status.as_ref();
    let running_since = (status.and_then(|s| s.phase) == Some(BackupPhase::Running))
        .then(|| status.and_then(|s| s.started_at.as_ref()));
    let wait = ctx.retry_after_failure(&uid, error.is_permanent(), running_since);
    warn!(backup = %backup.name_any(), account = %backup.spec.account, category = error.category(), permanent = error.is_permanent(), retry_in = ?wait, error = %error, "reconcile failed");
    Action::requeue(wait)
}

async fn apply(backup: Arc<AccountBackup>, ctx: &Context) -> Result<Action, BackupError> {
    let api: Api<AccountBackup> = Api::all(ctx.client.clone());
    let now = Timestamp::now();
    let phase = backup.status.as_ref().and_then(|s| s.phase);
    let imported_from = backup
        .annotations()
        .get(crate::api::IMPORTED_FROM_ANNOTATION);
    match phase {
        None if let Some(snapshot) = imported_from => {
            import(&api, &backup, ctx, snapshot, now).await
        }
        None | Some(BackupPhase::Queued) => try_start(&api, &backup, ctx, now).await,
        Some(BackupPhase::Running) => run_copy(&api, &backup, ctx).await,
        Some(finished @ (BackupPhase::Completed | BackupPhase::PartiallyFailed)) => {
            if finished == BackupPhase::Completed
                && let Some(at) = backup
                    .status
                    .as_ref()
                    .and_then(|s| s.completed_at.as_ref())
                    .map(|t| t.0)
            {
                ctx.metrics
                    .record_success(&backup.spec.account, at.as_second() as f64);
            }
            let retry = crate::notify::notify_outcome(
                ctx.notifier.as_ref(),
                &ctx.recorder,
                &api,
                &*backup,
                finished.as_str(),
            )
            .await;
            match decide::decide_finished(
                backup
                    .status
                    .as_ref()
                    .unwrap_or(&AccountBackupStatus::default()),
                now,
            ) {
                FinishedDecision::Expire => {
                    release_data(&backup, ctx).await?;
                    write(&api, &backup, &decide::expired_status(&backup, now)).await?;
                    publish(
                        ctx,
                        &backup,
                        EventType::Normal,
                        "Expired",
                        "past restorableUntil: data released".into(),
                    )
                    .await;
                    Ok(Action::await_change())
                }
                FinishedDecision::RecheckAt(at) => {
                    let wait = at
                        .duration_since(now)
                        .unsigned_abs()
                        .max(Duration::from_secs(1));
                    Ok(crate::notify::sooner_of(&[
                        retry,
                        Some(wait.min(Duration::from_secs(3600))),
                    ]))
                }
                FinishedDecision::Nothing => Ok(crate::notify::sooner_of(&[retry])),
            }
        }
        Some(BackupPhase::Expired) => {
            // The data is released already; the object stays visible for a day (so a restore
            // that names it is told it expired) and is then garbage-collected.
            match decide::expired_object_due(
                backup
                    .status
                    .as_ref()
                    .unwrap_or(&AccountBackupStatus::default()),
                now,
            ) {
                Some(wait) => Ok(Action::requeue(wait)),
                None => {
                    apply::delete_object(&api, &backup).await?;
                    Ok(Action::await_change())
                }
            }
        }
        Some(BackupPhase::Failed) => {
            let retry = crate::notify::notify_outcome(
                ctx.notifier.as_ref(),
                &ctx.recorder,
                &api,
                &*backup,
                BackupPhase::Failed.as_str(),
            )
            .await;
            Ok(crate::notify::sooner_of(&[retry]))
        }
    }
}

/// Fills an imported backup's status from its repository snapshot; it never copies anything.
async fn import(
    api: &Api<AccountBackup>,
    backup: &AccountBackup,
    ctx: &Context,
    snapshot_id: &str,
    now: Timestamp,
) -> Result<Action, BackupError> {
    let snapshots = ctx
        .store
        .list()
        .await
        .map_err(|err| BackupError::Repository(err.message))?;
    if let Some(refusal) = sync::import_refusal(
        &snapshots,
        snapshot_id,
        &backup.name_any(),
        &backup.spec.account,
    ) {
        // The status never names the snapshot, so deleting this backup releases nothing.
        write(
            api,
            backup,
            &decide::failed_status(backup, "ImportRefused", &refusal, now),
        )
        .await?;
        publish(ctx, backup, EventType::Warning, "ImportRefused", refusal).await;
        return Ok(Action::await_change());
    }
    let status = match read_outcome(ctx.store.as_ref(), snapshot_id).await {
        Ok((outcome, completed_at)) => {
            decide::imported_status(backup, snapshot_id, &outcome, completed_at, now)
        }
        Err(err) if !err.permanent => return Err(BackupError::Repository(err.message)),
        Err(err) => decide::failed_status(
            backup,
            "ImportFailed",
            &format!(
                "cannot import repository snapshot {snapshot_id}: {}; delete this AccountBackup (its data is released with it)",
                err.message
            ),
            now,
        ),
    };
    write(api, backup, &status).await?;
    publish(
        ctx,
        backup,
        if status.phase == Some(BackupPhase::Failed) {
            EventType::Warning
        } else {
            EventType::Normal
        },
        "Imported",
        format!("rebuilt from repository snapshot {snapshot_id}"),
    )
    .await;
    Ok(Action::await_change())
}

async fn try_start(
    api: &Api<AccountBackup>,
    backup: &AccountBackup,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action, BackupError> {
    let uid = backup.metadata.uid.clone().unwrap_or_default();
    // While the operator's limit is reached, a queued backup costs no API call but its status.
    if let Err(reached) = ctx.backup_limit.check(&uid).await {
        return queue(api, backup, &reached.behind(), now).await;
    }
    let projects = observe::projects(&ctx.client, &backup.spec.account).await?;
    match decide::decide_start(backup, &projects) {
        StartDecision::Fail { reason, message } => {
            write(
                api,
                backup,
                &decide::failed_status(backup, reason, &message, now),
            )
            .await?;
            publish(ctx, backup, EventType::Warning, reason, message).await;
            Ok(Action::await_change())
        }
        StartDecision::Queue { behind } => queue(api, backup, &behind, now).await,
        StartDecision::TryStart => {
            // The cache may be behind: start only what the API server still shows as waiting.
            let live = observe::live(api, backup).await?;
            if !decide::cache_is_current(backup, live.as_ref(), &[None, Some(BackupPhase::Queued)])
            {
                return Ok(Action::requeue(CACHE_CATCH_UP));
            }
            if let Err(reached) = ctx.backup_limit.try_claim(&uid).await {
                return queue(api, backup, &reached.behind(), now).await;
            }
            let lock = ctx
                .locks
                .try_acquire(&backup.spec.account, &Holder::backup(backup))
                .await;
            match lock {
                Err(err) => {
                    ctx.backup_limit.unclaim(&uid).await;
                    Err(err.into())
                }
                Ok(LockOutcome::Busy { behind }) => {
                    ctx.backup_limit.unclaim(&uid).await;
                    queue(api, backup, &behind, now).await
                }
                Ok(LockOutcome::RunningElsewhere { replica }) => {
                    // Another replica started it a moment ago; our cache has not seen that yet.
                    ctx.backup_limit.unclaim(&uid).await;
                    info!(%replica, "the backup was started by another replica");
                    Ok(Action::requeue(QUEUED_RECHECK))
                }
                Ok(LockOutcome::Held) => {
                    // startedAt is when the slot was taken, not when this reconcile began.
                    let started = decide::started_status(backup, Timestamp::now());
                    if let Err(err) = write(api, backup, &started).await {
                        ctx.backup_limit.unclaim(&uid).await;
                        return Err(err);
                    }
                    publish(
                        ctx,
                        backup,
                        EventType::Normal,
                        "Started",
                        format!("backing up {} projects", projects.len()),
                    )
                    .await;
                    // The status write wakes the controller again, now in Running.
                    Ok(Action::await_change())
                }
            }
        }
    }
}

async fn run_copy(
    api: &Api<AccountBackup>,
    backup: &AccountBackup,
    ctx: &Context,
) -> Result<Action, BackupError> {
    let live = observe::live(api, backup).await?;
    if !decide::cache_is_current(backup, live.as_ref(), &[Some(BackupPhase::Running)]) {
        return Ok(Action::requeue(CACHE_CATCH_UP));
    }
    let started = std::time::Instant::now();
    let status = backup.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    if decide::running_too_long(&status, now, ctx.operation_timeout) {
        return fail(api, backup, ctx, "DeadlineExceeded", &format!(
            "the backup ran longer than the operation timeout ({:?}); check the activity log for the slow step and take a new backup",
            ctx.operation_timeout
        ))
        .await;
    }
    // Re-take the account lock: ours already if this is a resumed backup.
    match ctx
        .locks
        .try_acquire(&backup.spec.account, &Holder::backup(backup))
        .await?
    {
        LockOutcome::Held => {}
        LockOutcome::Busy { behind } => {
            write(api, backup, &decide::queued_status(backup, &behind, now)).await?;
            return Ok(Action::requeue(QUEUED_RECHECK));
        }
        LockOutcome::RunningElsewhere { replica } => {
            // Another replica copies it and renews the lock; if it stops, the lock goes stale
            // and this replica resumes the backup.
            info!(%replica, "the backup is being copied by another replica; waiting");
            return Ok(Action::requeue(QUEUED_RECHECK));
        }
    }
    let _renewing = ctx
        .locks
        .keep_renewed(&backup.spec.account, &Holder::backup(backup));
    // The first copy attempt logs "copying" and writes it at once; finding it again means the
    // operator stopped mid-copy and this is a resumed attempt — which may find its work done.
    if decide::is_resumed(&status) {
        let uid = backup.metadata.uid.as_deref().unwrap_or_default();
        if let Some((outcome, completed_at)) =
            resume::committed_earlier(ctx.store.as_ref(), uid).await?
        {
            let mut adopted = status.clone();
            crate::status::push_activity(
                &mut adopted.activity,
                ActivityLevel::Warning,
                format!(
                    "resumed after an operator restart: snapshot {} was already committed; adopted it instead of copying again",
                    outcome.snapshot_id
                ),
                now,
            );
            let mut latest = backup.clone();
            latest.status = Some(adopted);
            return finish_copy(api, backup, &latest, ctx, &outcome, completed_at, started).await;
        }
        // What the stopped attempt snapshotted was never recorded: it goes before copying again.
        settle_snapshots(ctx, backup, None).await?;
    }
    let mut running = status.clone();
    running.projects.clear();
    running.project_count = 0;
    let (level, message) = decide::copy_attempt_entry(&status);
    crate::status::push_activity(&mut running.activity, level, message, now);
    decide::count_copy_attempt(&mut running);
    write(api, backup, &running).await?;
    let projects = observe::projects(&ctx.client, &backup.spec.account).await?;
    let types = crate::manifest::backed_up_types(ctx.client.clone()).await?;
    let classes = crate::snapshot::list_classes(&ctx.client)
        .await
        .unwrap_or_default();
    let deadline = decide::time_left(&status, Timestamp::now(), ctx.operation_timeout);
    let settings = execute::CopySettings {
        types: &types,
        classes: &classes,
        timeouts: ctx.step_timeouts,
        movers: &ctx.movers,
        time_left: deadline,
    };
    if let Some(progress) = running.progress.as_mut() {
        progress.items_done = 0;
    }
    let mut reporter = progress::ProgressReporter::new(api.clone(), backup.name_any(), running);
    // The whole copy runs under what is left of the operation timeout: a step that hangs is cut
    // off here (nothing is committed; fail() settles its snapshots) instead of holding the slot.
    let copied = tokio::time::timeout(
        deadline,
        execute::copy_account(
            &ctx.client,
            ctx.store.as_ref(),
            backup,
            &projects,
            &settings,
            &mut reporter,
        ),
    )
    .await;
    let mut latest = backup.clone();
    latest.status = Some(reporter.into_status());
    let Ok(copied) = copied else {
        return fail(
            api,
            &latest,
            ctx,
            "DeadlineExceeded",
            &format!(
                "the backup ran longer than the operation timeout ({:?}) and was stopped; nothing of it was kept. \
                 Check the activity log for the slow step (a hook or dump that never returns) and take a new backup",
                ctx.operation_timeout
            ),
        )
        .await;
    };
    match copied {
        Ok(outcome) => {
            finish_copy(
                api,
                backup,
                &latest,
                ctx,
                &outcome,
                Timestamp::now(),
                started,
            )
            .await
        }
        Err(err) if err.is_permanent() => {
            fail(api, &latest, ctx, err.category(), &err.to_string()).await
        }
        Err(err) => Err(err),
    }
}

/// Writes a copied (or adopted) backup's final status, frees its slot and lock, and reports it.
async fn finish_copy(
    api: &Api<AccountBackup>,
    backup: &AccountBackup,
    latest: &AccountBackup,
    ctx: &Context,
    outcome: &BackupOutcome,
    finished_at: Timestamp,
    started: std::time::Instant,
) -> Result<Action, BackupError> {
    settle_snapshots(ctx, backup, Some(outcome)).await?;
    let keep: Vec<&str> = outcome
        .volume_snapshots
        .iter()
        .filter_map(|v| v.repository_copy.as_ref().map(|c| c.snapshot.as_str()))
        .chain(
            outcome
                .database_dumps
                .iter()
                .filter_map(|d| d.snapshot.as_deref()),
        )
        .collect();
    apply::release_copies_and_dumps(
        ctx,
        backup.metadata.uid.as_deref().unwrap_or_default(),
        &keep,
    )
    .await?;
    let status = decide::finished_status(latest, outcome, finished_at);
    write(api, latest, &status).await?;
    release_slot_and_lock(ctx, backup).await?;
    let phase = status.phase.unwrap_or(BackupPhase::Completed);
    ctx.metrics
        .backup_logical_bytes
        .inc_by(outcome.logical_bytes);
    ctx.metrics.backup_stored_bytes.inc_by(outcome.stored_bytes);
    ctx.metrics
        .operation_duration
        .get_or_create(&OperationLabels {
            operation: "backup",
            phase: phase.as_str(),
        })
        .observe(started.elapsed().as_secs_f64());
    ctx.metrics.record_finished(&backup.spec.account, phase);
    if phase == BackupPhase::Completed {
        ctx.metrics
            .record_success(&backup.spec.account, finished_at.as_second() as f64);
    }
    let message = status
        .conditions
        .iter()
        .find(|c| c.type_ == crate::status::READY)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    let type_ = if phase == BackupPhase::Completed {
        EventType::Normal
    } else {
        EventType::Warning
    };
    publish(ctx, backup, type_, phase.as_str(), message).await;
    info!(
        phase = phase.as_str(),
        items = outcome.items,
        "backup finished"
    );
    Ok(Action::await_change())
}

async fn fail(
    api: &Api<AccountBackup>,
    backup: &AccountBackup,
    ctx: &Context,
    reason: &str,
    message: &str,
) -> Result<Action, BackupError> {
    write(
        api,
        backup,
        &decide::failed_status(backup, reason, message, Timestamp::now()),
    )
    .await?;
    // A failed backup records no volume; what it snapshotted goes now, or when it is deleted.
    if let Err(err) = settle_snapshots(ctx, backup, None).await {
        warn!(error = %err, "deleting the failed backup's volume snapshots failed; deleting the AccountBackup retries");
    }
    if let Err(err) = apply::release_copies_and_dumps(
        ctx,
        backup.metadata.uid.as_deref().unwrap_or_default(),
        &[],
    )
    .await
    {
        warn!(error = %err, "releasing the failed backup's volume copies and dumps failed; deleting the AccountBackup retries");
    }
    release_slot_and_lock(ctx, backup).await?;
    ctx.metrics
        .record_finished(&backup.spec.account, BackupPhase::Failed);
    publish(ctx, backup, EventType::Warning, reason, message.to_string()).await;
    Ok(Action::await_change())
}

async fn cleanup(backup: Arc<AccountBackup>, ctx: &Context) -> Result<Action, BackupError> {
    // Another replica (run without leader election) still copying this backup would go on
    // writing snapshots and repository data after its release: the deletion waits for that
    // copy to end, or for its replica's lock to go stale. The Lease says so, not the phase in
    // this replica's cache, which may not have seen the copy start.
    if let Some(replica) = ctx
        .locks
        .copying_replica(&backup.spec.account, &Holder::backup(&backup))
        .await?
    {
        // An error, not an Action: the finalizer helper removes the finalizer on any Ok.
        return Err(BackupError::CopiedElsewhere { replica });
    }
    let released = async {
        // A copy still running stops here; its objects go before the data they read.
        let uid = backup.metadata.uid.as_deref().unwrap_or_default();
        if !uid.is_empty() {
            crate::mover::apply::remove_all(&ctx.client, &ctx.namespace, uid).await?;
        }
        settle_snapshots(ctx, &backup, None).await?;
        release_data(&backup, ctx).await
    }
    .await;
    if let Err(err) = released {
        // Said on the object, with the way out, instead of a finalizer that waits in silence.
        let api: Api<AccountBackup> = Api::all(ctx.client.clone());
        let message = decide::deletion_blocked_message(&backup.name_any(), &err.to_string());
        let status =
            decide::deletion_blocked_status(&backup, err.category(), &message, Timestamp::now());
        if status != backup.status.clone().unwrap_or_default() {
            write(&api, &backup, &status).await?;
            publish(
                ctx,
                &backup,
                EventType::Warning,
                decide::DELETION_BLOCKED,
                message,
            )
            .await;
        }
        return Err(err);
    }
    ctx.locks
        .release(&backup.spec.account, &Holder::backup(&backup))
        .await?;
    info!("backup deleted: data released");
    Ok(Action::await_change())
}
