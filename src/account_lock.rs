//! One operation at a time per account, held as a Lease in the operator's namespace.
//!
//! The Lease `account-<account>` names its holder (`AccountBackup/<name>/<uid>`).
//! Creating it is the lock: the API server lets exactly one create succeed.
//! A holder that no longer exists or has finished is stale and is replaced
//! with a write conditional on the Lease's resourceVersion, so a restart or a
//! crashed operation never blocks an account for ever.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};

use crate::api::{AccountBackup, BackupPhase, ProjectRestore, RestorePhase};

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

    /// Parses an identity written by [`Holder::identity`].
    pub fn parse(identity: &str) -> Option<(String, String, String)> {
        let mut parts = identity.splitn(3, '/');
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
    /// The holder is gone or finished: replace it.
    TakeOverStale { previous: String },
    /// Another live operation holds it: wait behind it.
    Wait { behind: String },
}

/// Decides from the current holder identity and whether that holder is still active.
pub fn decide_lock(current_holder: Option<&str>, me: &Holder, holder_active: bool) -> LockDecision {
    match current_holder {
        None => LockDecision::Create,
        Some(holder) if holder == me.identity() => LockDecision::AlreadyOurs,
        Some(holder) if !holder_active => LockDecision::TakeOverStale {
            previous: holder.to_string(),
        },
        Some(holder) => LockDecision::Wait {
            behind: Holder::describe(holder),
        },
    }
}

/// Result of trying to take the lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockOutcome {
    /// We hold the lock.
    Held,
    /// Another operation holds it; names it for `queuedBehind`.
    Busy { behind: String },
}

/// The per-account locks of one operator namespace.
#[derive(Clone)]
pub struct AccountLocks {
    api: Api<Lease>,
    client: Client,
}

impl AccountLocks {
    /// Locks kept in `namespace` (the operator's own).
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client.clone(), namespace),
            client,
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

    /// Takes the account's lock for `me`; a holder whose operation no longer runs is replaced.
    pub async fn try_acquire(
        &self,
        account: &str,
        me: &Holder,
    ) -> Result<LockOutcome, kube::Error> {
        let name = lease_name(account);
        let current = self.api.get_opt(&name).await?;
        let holder = current
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.clone());
        let active = match &holder {
            Some(h) if *h != me.identity() => {
                holder_is_active(self.client.clone(), h.clone()).await?
            }
            _ => true,
        };
        let spec = LeaseSpec {
            holder_identity: Some(me.identity()),
            acquire_time: Some(MicroTime(Timestamp::now())),
            ..LeaseSpec::default()
        };
        let written = match decide_lock(holder.as_deref(), me, active) {
            LockDecision::AlreadyOurs => return Ok(LockOutcome::Held),
            LockDecision::Wait { behind } => return Ok(LockOutcome::Busy { behind }),
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
                let behind = self
                    .holder(account)
                    .await?
                    .map(|h| Holder::describe(&h))
                    .unwrap_or_default();
                Ok(LockOutcome::Busy { behind })
            }
            Err(err) => Err(err),
        }
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

    #[test]
    fn free_account_lock_is_created() {
        assert_eq!(decide_lock(None, &me(), true), LockDecision::Create);
    }

    #[test]
    fn own_lock_is_kept_across_restarts() {
        assert_eq!(
            decide_lock(Some("AccountBackup/nightly/u1"), &me(), true),
            LockDecision::AlreadyOurs
        );
    }

    #[test]
    fn live_holder_queues_us_behind_it_by_name() {
        assert_eq!(
            decide_lock(Some("ProjectRestore/undo/u9"), &me(), true),
            LockDecision::Wait {
                behind: "ProjectRestore/undo".into()
            }
        );
    }

    #[test]
    fn finished_or_deleted_holder_is_taken_over() {
        assert_eq!(
            decide_lock(Some("AccountBackup/old/u0"), &me(), false),
            LockDecision::TakeOverStale {
                previous: "AccountBackup/old/u0".into()
            }
        );
    }

    #[test]
    fn same_name_recreated_object_is_a_different_holder() {
        assert_ne!(
            decide_lock(Some("AccountBackup/nightly/u0"), &me(), true),
            LockDecision::AlreadyOurs
        );
    }
}
