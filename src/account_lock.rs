//! One operation at a time per account, held as a Lease in the operator's namespace.
//!
//! The Lease `account-<account>` names its holder: the operation and the replica running it
//! (`AccountBackup/<name>/<uid>@<replica>`). Creating it is the lock: the API server lets exactly
//! one create succeed. A holder that no longer exists or has finished is stale and is replaced
//! with a write conditional on the Lease's resourceVersion, so a restart or a crashed operation
//! never blocks an account for ever.
//!
//! Without leader election two replicas can both reconcile the same operation: the one whose
//! name is in the Lease runs it and renews the Lease every [`RENEW_EVERY`] while it does; the
//! other waits, and takes the operation over only after it has seen the Lease unchanged for
//! [`LOCK_DURATION`] on its own monotonic clock — the replica that held it stopped. A replica
//! restarted under the same name (a container restart keeps the pod name) resumes at once, and so
//! does an elected leader: the previous leader stopped acting before leadership could pass.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};

use crate::api::{AccountBackup, BackupPhase, ProjectRestore, RestorePhase};
use crate::lease_observer::LeaseObserver;

/// How long a replica's hold on an account lasts without renewal.
pub const LOCK_DURATION: Duration = Duration::from_secs(30);
/// How often the replica running an operation renews its account's Lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);

/// The operation that holds, or wants, an account's lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// `AccountBackup` or `ProjectRestore`.
    pub kind: &'static str,
    /// The object's name.
    pub name: String,
    /// The object's uid, so a recreated object of the same name is a different holder.
    pub uid: String,
}

impl Holder {
    /// The lock holder that is this backup.
    pub fn backup(backup: &AccountBackup) -> Self {
        Self {
            kind: "AccountBackup",
            name: backup.name_any(),
            uid: backup.metadata.uid.clone().unwrap_or_default(),
        }
    }

    /// The lock holder that is this restore.
    pub fn restore(restore: &ProjectRestore) -> Self {
        Self {
            kind: "ProjectRestore",
            name: restore.name_any(),
            uid: restore.metadata.uid.clone().unwrap_or_default(),
        }
    }

    /// The identity written into the Lease.
    pub fn identity(&self) -> String {
        format!("{}/{}/{}", self.kind, self.name, self.uid)
    }

    /// The Lease's holder identity: this operation, run by `replica`.
    pub fn on(&self, replica: &str) -> String {
        format!("{}@{replica}", self.identity())
    }

    /// Parses an identity written by [`Holder::identity`] or [`Holder::on`] (the replica dropped).
    pub fn parse(identity: &str) -> Option<(String, String, String)> {
        let operation = identity.split_once('@').map_or(identity, |(op, _)| op);
        let mut parts = operation.splitn(3, '/');
        Some((
            parts.next()?.to_string(),
            parts.next()?.to_string(),
            parts.next()?.to_string(),
        ))
    }

    /// `AccountBackup/nightly` — for people, in `queuedBehind`.
    pub fn describe(identity: &str) -> String {
        match Self::parse(identity) {
            Some((kind, name, _)) => format!("{kind}/{name}"),
            None => identity.to_string(),
        }
    }
}

/// The Lease name of an account's lock.
pub fn lease_name(account: &str) -> String {
    format!("account-{account}")
}

/// What to do with the lock as observed (pure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockDecision {
    /// Nobody holds it: create it.
    Create,
    /// We already hold it.
    AlreadyOurs,
    /// The holder is gone or finished, or its replica stopped renewing: replace it.
    TakeOverStale { previous: String },
    /// Another live operation holds it: wait behind it.
    Wait { behind: String },
    /// This very operation runs on another replica that still renews the lock: leave it be.
    RunningElsewhere { replica: String },
}

/// The lock as one replica sees it when it wants it.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// The Lease's holder identity, if there is a Lease.
    pub holder: Option<&'a str>,
    /// Whether the operation it names still runs (Running, not deleted).
    pub holder_active: bool,
    /// How long this replica has seen the same Lease record, on its own monotonic clock.
    pub unchanged_for: Duration,
    /// This replica won leader election: every other replica has stopped acting (a leader that
    /// cannot renew exits before its lease can pass on), so whatever they held is stale.
    pub others_stopped: bool,
}

/// Decides from the current holder, whether its operation still runs and how long its replica
/// has not renewed it as we observed (pure).
pub fn decide_lock(observed: Observed<'_>, me: &Holder, replica: &str) -> LockDecision {
    let Some(holder) = observed.holder else {
        return LockDecision::Create;
    };
    let (operation, holder_replica) = match holder.split_once('@') {
        Some((operation, replica)) => (operation, Some(replica)),
        None => (holder, None),
    };
    if !observed.holder_active {
        return LockDecision::TakeOverStale {
            previous: holder.to_string(),
        };
    }
    if operation != me.identity() {
        return LockDecision::Wait {
            behind: Holder::describe(holder),
        };
    }
    match holder_replica {
        // Ours, or written before replicas were named: the same process or its predecessor.
        Some(r) if r == replica => LockDecision::AlreadyOurs,
        None => LockDecision::AlreadyOurs,
        Some(_) if observed.others_stopped || observed.unchanged_for >= LOCK_DURATION => {
            LockDecision::TakeOverStale {
                previous: holder.to_string(),
            }
        }
        Some(other) => LockDecision::RunningElsewhere {
            replica: other.to_string(),
        },
    }
}

/// The replica still copying operation `me`, if another one renews its lock (pure): asked when
/// the operation is being deleted, so its own state no longer says whether a copy runs — the
/// Lease's renewals do. A copy on another replica keeps going after the deletion (its
/// reconcile does not stop), and what it writes must not outlive the cleanup.
pub fn copied_elsewhere(observed: Observed<'_>, me: &Holder, replica: &str) -> Option<String> {
    let still_running = Observed {
        holder_active: true,
        ..observed
    };
    match decide_lock(still_running, me, replica) {
        LockDecision::RunningElsewhere { replica } => Some(replica),
        _ => None,
    }
}

/// Result of trying to take the lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockOutcome {
    /// We hold the lock.
    Held,
    /// Another operation holds it; names it for `queuedBehind`.
    Busy { behind: String },
    /// This operation runs on another replica: check again later, change nothing.
    RunningElsewhere { replica: String },
}

/// The per-account locks of one operator namespace, as taken by one replica.
#[derive(Clone)]
pub struct AccountLocks {
    api: Api<Lease>,
    client: Client,
    replica: String,
    /// Whether this replica only acts as the elected leader.
    leader_elected: bool,
    /// How long each account's Lease has looked the same to this replica (observation only:
    /// a restarted replica starts observing afresh and waits one full duration at most).
    observers: Arc<Mutex<HashMap<String, LeaseObserver>>>,
}

impl AccountLocks {
    /// Locks kept in `namespace` (the operator's own), taken in the name of `replica`, which
    /// acts only once it won leader election when `leader_elected`.
    pub fn new(client: Client, namespace: &str, replica: &str, leader_elected: bool) -> Self {
        Self {
            api: Api::namespaced(client.clone(), namespace),
            client,
            replica: replica.to_string(),
            leader_elected,
            observers: Arc::default(),
        }
    }

    fn unchanged_for(&self, name: &str, lease: Option<&Lease>) -> Duration {
        let mut observers = self
            .observers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        observers
            .entry(name.to_string())
            .or_default()
            .observe(lease.and_then(|l| l.spec.as_ref()), Instant::now())
    }

    fn spec_for(&self, me: &Holder) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(me.on(&self.replica)),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_duration_seconds: Some(LOCK_DURATION.as_secs() as i32),
            ..LeaseSpec::default()
        }
    }

    /// Renews the account's Lease every [`RENEW_EVERY`] while the guard lives, so other replicas
    /// see that this one still runs the operation. Dropping the guard stops renewing.
    pub fn keep_renewed(&self, account: &str, me: &Holder) -> RenewGuard {
        let locks = self.clone();
        let account = account.to_string();
        let me = me.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(RENEW_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                match locks.renew(&account, &me).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!(%account, holder = %me.identity(), "the account lock is no longer ours: another replica took it over after this one did not renew it in time");
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(%account, error = %err, "could not renew the account lock; retrying")
                    }
                }
            }
        });
        RenewGuard(task)
    }

    /// One renewal; false when the Lease is no longer ours.
    async fn renew(&self, account: &str, me: &Holder) -> Result<bool, kube::Error> {
        let name = lease_name(account);
        let Some(mut lease) = self.api.get_opt(&name).await? else {
            return Ok(false);
        };
        let ours = me.on(&self.replica);
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(false);
        };
        if spec.holder_identity.as_deref() != Some(ours.as_str()) {
            return Ok(false);
        }
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        spec.lease_duration_seconds = Some(LOCK_DURATION.as_secs() as i32);
        match self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            // Written in between: by us (fine) or by a replica that took it (seen next round).
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(true),
            Err(err) => Err(err),
        }
    }

    /// Who holds the account's lock now, if anyone.
    pub async fn holder(&self, account: &str) -> Result<Option<String>, kube::Error> {
        Ok(self
            .api
            .get_opt(&lease_name(account))
            .await?
            .and_then(|lease| lease.spec)
            .and_then(|spec| spec.holder_identity))
    }

    /// The account's Lease as this replica sees it: its name, the object, its holder and how
    /// long this replica has seen the same record.
    async fn read(
        &self,
        account: &str,
    ) -> Result<(String, Option<Lease>, Option<String>, Duration), kube::Error> {
        let name = lease_name(account);
        let current = self.api.get_opt(&name).await?;
        let unchanged_for = self.unchanged_for(&name, current.as_ref());
        let holder = current
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.clone());
        Ok((name, current, holder, unchanged_for))
    }

    /// Takes the account's lock for `me`; a holder whose operation no longer runs is replaced.
    pub async fn try_acquire(
        &self,
        account: &str,
        me: &Holder,
    ) -> Result<LockOutcome, kube::Error> {
        let (name, current, holder, unchanged_for) = self.read(account).await?;
        let holder_active = match &holder {
            Some(h) => holder_is_active(self.client.clone(), h.clone()).await?,
            None => true,
        };
        let observed = Observed {
            holder: holder.as_deref(),
            holder_active,
            unchanged_for,
            others_stopped: self.leader_elected,
        };
        let spec = self.spec_for(me);
        let written = match decide_lock(observed, me, &self.replica) {
            LockDecision::AlreadyOurs => return Ok(LockOutcome::Held),
            LockDecision::Wait { behind } => return Ok(LockOutcome::Busy { behind }),
            LockDecision::RunningElsewhere { replica } => {
                return Ok(LockOutcome::RunningElsewhere { replica });
            }
            LockDecision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some(
                            [(
                                "app.kubernetes.io/managed-by".to_string(),
                                "rewind".to_string(),
                            )]
                            .into(),
                        ),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            LockDecision::TakeOverStale { .. } => {
                let mut lease = current.unwrap_or_default();
                lease.spec = Some(spec);
                self.api
                    .replace(&name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(_) => Ok(LockOutcome::Held),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                // Someone wrote first: another operation, or this one from another replica.
                let holder = self.holder(account).await?.unwrap_or_default();
                match holder.split_once('@') {
                    Some((operation, replica)) if operation == me.identity() => {
                        Ok(LockOutcome::RunningElsewhere {
                            replica: replica.to_string(),
                        })
                    }
                    _ => Ok(LockOutcome::Busy {
                        behind: Holder::describe(&holder),
                    }),
                }
            }
            Err(err) => Err(err),
        }
    }

    /// The replica still copying `me` on `account`, if another one renews its lock
    /// ([`copied_elsewhere`]).
    pub async fn copying_replica(
        &self,
        account: &str,
        me: &Holder,
    ) -> Result<Option<String>, kube::Error> {
        let (_, _, holder, unchanged_for) = self.read(account).await?;
        let observed = Observed {
            holder: holder.as_deref(),
            // Not read: copied_elsewhere asks as if the operation still ran.
            holder_active: true,
            unchanged_for,
            others_stopped: self.leader_elected,
        };
        Ok(copied_elsewhere(observed, me, &self.replica))
    }

    /// Releases the lock if `me` holds it (idempotent).
    pub async fn release(&self, account: &str, me: &Holder) -> Result<(), kube::Error> {
        let name = lease_name(account);
        let Some(lease) = self.api.get_opt(&name).await? else {
            return Ok(());
        };
        let ours = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            .map(|h| h.split_once('@').map_or(h, |(op, _)| op))
            == Some(me.identity().as_str());
        if !ours {
            return Ok(());
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: lease.metadata.uid.clone(),
                resource_version: lease.metadata.resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(&name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
            Err(err) => Err(err),
        }
    }
}

/// Stops renewing an account's Lease when dropped.
pub struct RenewGuard(tokio::task::JoinHandle<()>);

impl Drop for RenewGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether the operation named by a lock holder identity still runs.
async fn holder_is_active(client: Client, identity: String) -> Result<bool, kube::Error> {
    let Some((kind, name, uid)) = Holder::parse(&identity) else {
        return Ok(false);
    };
    match kind.as_str() {
        "AccountBackup" => {
            let api: Api<AccountBackup> = Api::all(client);
            Ok(api.get_opt(&name).await?.is_some_and(|b| {
                b.metadata.uid.as_deref() == Some(uid.as_str())
                    && b.metadata.deletion_timestamp.is_none()
                    && b.status.and_then(|s| s.phase) == Some(BackupPhase::Running)
            }))
        }
        "ProjectRestore" => {
            let api: Api<ProjectRestore> = Api::all(client);
            Ok(api.get_opt(&name).await?.is_some_and(|r| {
                r.metadata.uid.as_deref() == Some(uid.as_str())
                    && r.status.and_then(|s| s.phase) == Some(RestorePhase::Running)
            }))
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Holder {
        Holder {
            kind: "AccountBackup",
            name: "nightly".into(),
            uid: "u1".into(),
        }
    }

    fn seen(holder: Option<&str>, holder_active: bool, unchanged_for: u64) -> Observed<'_> {
        Observed {
            holder,
            holder_active,
            unchanged_for: Duration::from_secs(unchanged_for),
            others_stopped: false,
        }
    }

    #[test]
    fn a_deleted_operation_is_still_copied_elsewhere_while_the_other_replica_renews_its_lock() {
        let holder = Some("AccountBackup/nightly/u1@b");
        assert_eq!(
            copied_elsewhere(seen(holder, false, 5), &me(), "a"),
            Some("b".to_string()),
            "deleted (not active) but renewed: the other replica still copies"
        );
        assert_eq!(
            copied_elsewhere(seen(holder, false, LOCK_DURATION.as_secs()), &me(), "a"),
            None,
            "not renewed for a lock's duration: that replica is gone"
        );
        assert_eq!(
            copied_elsewhere(
                seen(Some("AccountBackup/nightly/u1@a"), false, 5),
                &me(),
                "a"
            ),
            None,
            "our own copy: this replica's reconcile is the one deleting"
        );
        assert_eq!(
            copied_elsewhere(seen(Some("AccountBackup/other/u2@b"), true, 5), &me(), "a"),
            None,
            "another operation's lock says nothing about this one"
        );
        assert_eq!(copied_elsewhere(seen(None, true, 0), &me(), "a"), None);
        let elected = Observed {
            others_stopped: true,
            ..seen(holder, false, 5)
        };
        assert_eq!(
            copied_elsewhere(elected, &me(), "a"),
            None,
            "an elected leader knows every other replica stopped"
        );
    }

    #[test]
    fn free_account_lock_is_created() {
        assert_eq!(
            decide_lock(seen(None, true, 0), &me(), "a"),
            LockDecision::Create
        );
    }

    #[test]
    fn own_lock_is_kept_across_restarts_of_the_same_replica() {
        assert_eq!(
            decide_lock(
                seen(Some("AccountBackup/nightly/u1@a"), true, 0),
                &me(),
                "a"
            ),
            LockDecision::AlreadyOurs
        );
    }

    #[test]
    fn a_lock_written_before_replicas_were_named_is_still_ours() {
        assert_eq!(
            decide_lock(seen(Some("AccountBackup/nightly/u1"), true, 0), &me(), "a"),
            LockDecision::AlreadyOurs
        );
    }

    #[test]
    fn the_same_operation_renewed_by_another_replica_is_left_to_it() {
        assert_eq!(
            decide_lock(
                seen(Some("AccountBackup/nightly/u1@b"), true, 29),
                &me(),
                "a"
            ),
            LockDecision::RunningElsewhere {
                replica: "b".into()
            }
        );
    }

    #[test]
    fn the_same_operation_is_taken_over_once_its_replica_stopped_renewing_for_the_lock_duration() {
        assert_eq!(
            decide_lock(
                seen(Some("AccountBackup/nightly/u1@b"), true, 30),
                &me(),
                "a"
            ),
            LockDecision::TakeOverStale {
                previous: "AccountBackup/nightly/u1@b".into()
            }
        );
    }

    #[test]
    fn the_elected_leader_takes_over_the_same_operation_from_a_previous_leader_at_once() {
        let observed = Observed {
            others_stopped: true,
            ..seen(Some("AccountBackup/nightly/u1@b"), true, 0)
        };
        assert_eq!(
            decide_lock(observed, &me(), "a"),
            LockDecision::TakeOverStale {
                previous: "AccountBackup/nightly/u1@b".into()
            }
        );
    }

    #[test]
    fn the_elected_leader_still_waits_behind_another_live_operation() {
        let observed = Observed {
            others_stopped: true,
            ..seen(Some("ProjectRestore/undo/u9@b"), true, 0)
        };
        assert_eq!(
            decide_lock(observed, &me(), "a"),
            LockDecision::Wait {
                behind: "ProjectRestore/undo".into()
            }
        );
    }

    #[test]
    fn live_holder_queues_us_behind_it_by_name_however_long_it_looks_unchanged() {
        assert_eq!(
            decide_lock(
                seen(Some("ProjectRestore/undo/u9@b"), true, 3600),
                &me(),
                "a"
            ),
            LockDecision::Wait {
                behind: "ProjectRestore/undo".into()
            }
        );
    }

    #[test]
    fn finished_or_deleted_holder_is_taken_over() {
        assert_eq!(
            decide_lock(seen(Some("AccountBackup/old/u0@b"), false, 0), &me(), "a"),
            LockDecision::TakeOverStale {
                previous: "AccountBackup/old/u0@b".into()
            }
        );
    }

    #[test]
    fn same_name_recreated_object_is_a_different_holder() {
        assert_eq!(
            decide_lock(
                seen(Some("AccountBackup/nightly/u0@a"), true, 0),
                &me(),
                "a"
            ),
            LockDecision::Wait {
                behind: "AccountBackup/nightly".into()
            }
        );
    }

    #[test]
    fn a_holder_identity_parses_with_or_without_its_replica() {
        let parsed = Some(("AccountBackup".into(), "nightly".into(), "u1".into()));
        assert_eq!(Holder::parse("AccountBackup/nightly/u1@rewind-0"), parsed);
        assert_eq!(Holder::parse("AccountBackup/nightly/u1"), parsed);
        assert_eq!(me().on("rewind-0"), "AccountBackup/nightly/u1@rewind-0");
    }
}
