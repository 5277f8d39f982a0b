//! The ProjectRestore reconcile shell: the kube-runtime wiring, then per phase observe → decide → apply → report.
//!
//! The phase and the target namespaces live in the status, so a restore found
//! Running after an operator restart runs its (idempotent) steps again to the end.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

use super::apply::{publish, write};
use super::decide::{FinishedDecision, status};
use super::error::RestoreError;
use super::execute::RestoreJob;
use super::progress::ProgressWriter;
use super::{apply, decide, observe};
use crate::account_lock::{Holder, LockOutcome};
use crate::api::{ProjectRestore, RESTORE_FINALIZER, RestorePhase};
use crate::context::Context;
use crate::metrics::{OperationLabels, ReconcileLabels};

const QUEUED_RECHECK: Duration = Duration::from_secs(5);

/// Runs the controller until `shutdown` is cancelled.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let api: Api<ProjectRestore> = Api::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default().any_semantic())
        .with_config(ControllerConfig::default().concurrency(4))
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[instrument(skip_all, fields(restore = %restore.name_any(), backup = %restore.spec.backup))]
async fn reconcile(
    restore: Arc<ProjectRestore>,
    ctx: Arc<Context>,
) -> Result<Action, RestoreError> {
    let api: Api<ProjectRestore> = Api::all(ctx.client.clone());
    let uid = restore.metadata.uid.clone();
    let result = finalizer(&api, RESTORE_FINALIZER, restore, |event| async {
        match event {
            FinalizerEvent::Apply(restore) => apply(restore, &ctx).await,
            FinalizerEvent::Cleanup(restore) => cleanup(restore, &ctx).await,
        }
    })
    .await
    .map_err(|err| match err {
        kube::runtime::finalizer::Error::ApplyFailed(err)
        | kube::runtime::finalizer::Error::CleanupFailed(err) => err,
        other => RestoreError::Finalizer(other.to_string()),
    });
    let (outcome, category) = match &result {
        Ok(_) => {
            ctx.backoff.succeeded(uid.as_deref().unwrap_or_default());
            ("ok", "none")
        }
        Err(err) => ("error", err.category()),
    };
    ctx.metrics
        .reconciles
        .get_or_create(&ReconcileLabels {
            controller: "projectrestore",
            result: outcome,
            category,
        })
        .inc();
    result
}

fn error_policy(restore: Arc<ProjectRestore>, error: &RestoreError, ctx: Arc<Context>) -> Action {
    let uid = restore.metadata.uid.clone().unwrap_or_default();
    let status = restore.status.as_ref();
    let running_since = (status.and_then(|s| s.phase) == Some(RestorePhase::Running))
        .then(|| status.and_then(|s| s.started_at.as_ref()));
    let wait = ctx.retry_after_failure(&uid, error.is_permanent(), running_since);
    warn!(restore = %restore.name_any(), category = error.category(), permanent = error.is_permanent(), retry_in = ?wait, error = %error, "reconcile failed");
    Action::requeue(wait)
}

async fn apply(restore: Arc<ProjectRestore>, ctx: &Context) -> Result<Action, RestoreError> {
    let api: Api<ProjectRestore> = Api::all(ctx.client.clone());
    let now = Timestamp::now();
    match restore.status.as_ref().and_then(|s| s.phase) {
        phase @ (None | Some(RestorePhase::Queued | RestorePhase::Running)) => {
            let step = if phase == Some(RestorePhase::Running) {
                run_restore(&api, &restore, ctx).await
            } else {
                try_start(&api, &restore, ctx, now).await
            };
            match step {
                // Retrying cannot help (the backup's data is gone or unreadable): the restore
                // fails now with the reason, and its lock is released.
                Err(err) if err.fails_the_restore() => {
                    fail(&api, &restore, ctx, err.category(), &err.to_string()).await
                }
                other => other,
            }
        }
        Some(phase @ (RestorePhase::Completed | RestorePhase::PartiallyFailed)) => {
            let retry = crate::notify::notify_outcome(
                ctx.notifier.as_ref(),
                &ctx.recorder,
                &api,
                &*restore,
                phase.as_str(),
            )
            .await;
            let expiry = expire_if_due(&api, &restore, ctx, now).await?;
            Ok(crate::notify::sooner_of(&[retry, expiry]))
        }
        Some(RestorePhase::Failed) => {
            let retry = crate::notify::notify_outcome(
                ctx.notifier.as_ref(),
                &ctx.recorder,
                &api,
                &*restore,
                RestorePhase::Failed.as_str(),
            )
            .await;
            Ok(crate::notify::sooner_of(&[retry]))
        }
    }
}

async fn try_start(
    api: &Api<ProjectRestore>,
    restore: &ProjectRestore,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action, RestoreError> {
    let backup = match observe::backup_of(&ctx.client, restore).await? {
        Some(backup) => Some(observe::with_all_records(ctx.store.as_ref(), restore, backup).await?),
        None => None,
    };
    let existing = observe::namespace_names(&ctx.client).await?;
    let targets =
        match decide::check_restorable(restore, backup.as_ref(), &existing, &ctx.namespace, now) {
            Ok(targets) => targets,
            Err(refusal) => {
                write(
                    api,
                    restore,
                    &status::failed(restore, refusal.reason, &refusal.message, now),
                )
                .await?;
                publish(
                    ctx,
                    restore,
                    EventType::Warning,
                    refusal.reason,
                    refusal.message,
                )
                .await;
                return Ok(Action::await_change());
            }
        };
    // The lock is the restore's own account's (check_restorable proved the backup is of it).
    match ctx
        .locks
        .try_acquire(&restore.spec.account, &Holder::restore(restore))
        .await?
    {
        LockOutcome::Busy { behind } => {
            write(api, restore, &status::queued(restore, &behind, now)).await?;
            Ok(Action::requeue(QUEUED_RECHECK))
        }
        LockOutcome::RunningElsewhere { replica } => {
            info!(%replica, "the restore was started by another replica");
            Ok(Action::requeue(QUEUED_RECHECK))
        }
        LockOutcome::Held => {
            let backup_status = backup.and_then(|b| b.status).unwrap_or_default();
            let started = status::started(restore, &targets, &backup_status, now);
            write(api, restore, &started).await?;
            publish(
                ctx,
                restore,
                EventType::Normal,
                "Started",
                format!("restoring {} projects", targets.len()),
            )
            .await;
            Ok(Action::await_change())
        }
    }
}

async fn run_restore(
    api: &Api<ProjectRestore>,
    restore: &ProjectRestore,
    ctx: &Context,
) -> Result<Action, RestoreError> {
    let started = std::time::Instant::now();
    let current = restore.status.clone().unwrap_or_default();
    // First, before any read that could fail: a restore past its deadline fails and frees the
    // account's lock, whatever else is wrong.
    if decide::running_too_long(&current, Timestamp::now(), ctx.operation_timeout) {
        return fail(
            api,
            restore,
            ctx,
            "DeadlineExceeded",
            "the restore ran longer than the operation timeout; see the activity log",
        )
        .await;
    }
    let Some(backup) = observe::backup_of(&ctx.client, restore).await? else {
        return fail(
            api,
            restore,
            ctx,
            "BackupNotFound",
            "the AccountBackup was deleted during the restore",
        )
        .await;
    };
    let account = backup.spec.account.clone();
    // Re-checked on every run: the backup is read by name, and a same-named backup of another
    // account could have taken its place since the restore started.
    if account != restore.spec.account {
        return fail(
            api,
            restore,
            ctx,
            "AccountMismatch",
            &format!(
                "AccountBackup {} is not a backup of account {}: a restore can only restore its own account's backups",
                restore.spec.backup, restore.spec.account
            ),
        )
        .await;
    }
    let backup = observe::with_all_records(ctx.store.as_ref(), restore, backup).await?;
    match ctx
        .locks
        .try_acquire(&account, &Holder::restore(restore))
        .await?
    {
        LockOutcome::Held => {}
        LockOutcome::Busy { behind } => {
            write(
                api,
                restore,
                &status::queued(restore, &behind, Timestamp::now()),
            )
            .await?;
            return Ok(Action::requeue(QUEUED_RECHECK));
        }
        LockOutcome::RunningElsewhere { replica } => {
            // Another replica restores it and renews the lock; if it stops, this one resumes.
            info!(%replica, "the restore is being run by another replica; waiting");
            return Ok(Action::requeue(QUEUED_RECHECK));
        }
    }
    let _renewing = ctx.locks.keep_renewed(&account, &Holder::restore(restore));
    let job = RestoreJob {
        restore,
        backup: &backup,
        targets: &current.target_namespaces,
        timeouts: ctx.step_timeouts,
        movers: &ctx.movers,
        deadline: tokio::time::Instant::now()
            + crate::status::time_left(
                current.started_at.as_ref(),
                Timestamp::now(),
                ctx.operation_timeout,
            ),
    };
    let mut progress = ProgressWriter::new(api.clone(), restore.name_any(), current.clone());
    // The whole run under what is left of the operation timeout: creates retried against a
    // busy API server or snapshots that never become ready cannot hold the lock past it.
    let left = crate::status::time_left(
        current.started_at.as_ref(),
        Timestamp::now(),
        ctx.operation_timeout,
    );
    let run = super::execute::run(&ctx.client, ctx.store.as_ref(), &job, &mut progress);
    let Ok(result) = tokio::time::timeout(left, run).await else {
        return fail(
            api,
            restore,
            ctx,
            "DeadlineExceeded",
            "the restore ran longer than the operation timeout and was stopped; the namespaces it created so far stay (delete them, or restore again into new names); see the activity log for the slow step",
        )
        .await;
    };
    let outcome = result?;
    // Every item, for when the status lists only the first ones.
    for item in &outcome.failed {
        warn!(project = %item.project, kind = %item.kind, name = %item.name, reason = %item.reason, "item not restored");
    }
    for warning in &outcome.warnings {
        warn!(warning = %warning, "restore warning");
    }
    for token in &outcome.regenerated_tokens {
        info!(namespace = %token.namespace, secret = %token.secret, keys = ?token.keys, "token regenerated");
    }
    for (what, items) in [
        ("skipped", &outcome.skipped),
        ("adjusted", &outcome.adjusted),
    ] {
        for item in items {
            info!(project = %item.project, kind = %item.kind, name = %item.name, reason = %item.reason, "item {what}");
        }
    }
    let finished = status::finished(restore, &outcome, Timestamp::now());
    write(api, restore, &finished).await?;
    apply::remove_movers(ctx, restore).await;
    ctx.locks
        .release(&account, &Holder::restore(restore))
        .await?;
    let phase = if finished.phase == Some(RestorePhase::Completed) {
        "Completed"
    } else {
        "PartiallyFailed"
    };
    ctx.metrics
        .operation_duration
        .get_or_create(&OperationLabels {
            operation: "restore",
            phase,
        })
        .observe(started.elapsed().as_secs_f64());
    let message = finished
        .conditions
        .iter()
        .find(|c| c.type_ == crate::status::READY)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    let type_ = if finished.phase == Some(RestorePhase::Completed) {
        EventType::Normal
    } else {
        EventType::Warning
    };
    publish(ctx, restore, type_, phase, message).await;
    info!(phase, "restore finished");
    Ok(match decide::decide_finished(&finished, Timestamp::now()) {
        FinishedDecision::RecheckAt(at) => {
            Action::requeue(decide::wait_until(at, Timestamp::now()))
        }
        FinishedDecision::Expire => Action::requeue(Duration::from_secs(1)),
        FinishedDecision::Nothing => Action::await_change(),
    })
}

async fn fail(
    api: &Api<ProjectRestore>,
    restore: &ProjectRestore,
    ctx: &Context,
    reason: &str,
    message: &str,
) -> Result<Action, RestoreError> {
    write(
        api,
        restore,
        &status::failed(restore, reason, message, Timestamp::now()),
    )
    .await?;
    apply::remove_movers(ctx, restore).await;
    // A restore only ever holds its own account's lock; releasing is a no-op when it does not.
    ctx.locks
        .release(&restore.spec.account, &Holder::restore(restore))
        .await?;
    publish(
        ctx,
        restore,
        EventType::Warning,
        reason,
        message.to_string(),
    )
    .await;
    Ok(Action::await_change())
}

/// Deletes an expired restore's namespaces; returns when to look again.
async fn expire_if_due(
    api: &Api<ProjectRestore>,
    restore: &ProjectRestore,
    ctx: &Context,
    now: Timestamp,
) -> Result<Option<Duration>, RestoreError> {
    let current = restore.status.clone().unwrap_or_default();
    match decide::decide_finished(&current, now) {
        FinishedDecision::Expire => {
            apply::delete_namespaces(ctx, restore).await?;
            write(api, restore, &status::expired(restore, now)).await?;
            publish(
                ctx,
                restore,
                EventType::Normal,
                status::EXPIRED,
                "expireAfter passed: restored namespaces deleted".into(),
            )
            .await;
            Ok(None)
        }
        FinishedDecision::RecheckAt(at) => Ok(Some(decide::wait_until(at, now))),
        FinishedDecision::Nothing => Ok(None),
    }
}

/// Deleting a restore that has not finished removes the namespaces it created; a finished
/// restore's namespaces belong to the user from then on and stay.
async fn cleanup(restore: Arc<ProjectRestore>, ctx: &Context) -> Result<Action, RestoreError> {
    let current = restore.status.clone().unwrap_or_default();
    let unfinished = matches!(
        current.phase,
        None | Some(RestorePhase::Queued | RestorePhase::Running)
    );
    if unfinished {
        apply::delete_namespaces(ctx, &restore).await?;
    }
    apply::remove_movers(ctx, &restore).await;
    // Its own account's lock, even when the backup is gone already.
    ctx.locks
        .release(&restore.spec.account, &Holder::restore(&restore))
        .await?;
    Ok(Action::await_change())
}
