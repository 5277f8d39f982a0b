//! Leader election on a coordination.k8s.io Lease: a pure decision plus thin I/O.
//!
//! Every write carries the Lease's `resourceVersion`, so two replicas that
//! read the same expired Lease cannot both win: the API server rejects the
//! second write with a conflict. A replica that cannot renew before its lease
//! runs out stops acting (the process exits and is restarted as a standby).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tracing::{info, warn};

/// Timing of the election, as in client-go's leaderelection.
#[derive(Clone, Debug)]
pub struct LeaseTiming {
    /// How long a lease is valid after its last renewal.
    pub lease_duration: Duration,
    /// The leader gives up if it could not renew for this long.
    pub renew_deadline: Duration,
    /// How often candidates retry and leaders renew.
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What a replica should do with the Lease it just read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// No Lease exists: create it holding it ourselves.
    Create,
    /// We hold it: write a new renewTime.
    Renew,
    /// Another holder let it expire (or released it): take it over.
    TakeOver { previous_holder: Option<String> },
    /// Another holder's lease is still valid: wait.
    Wait { holder: String },
}

/// Decides what to do with the current Lease (pure; time injected).
pub fn decide_lease(current: Option<&LeaseSpec>, me: &str, now: Timestamp) -> LeaseAction {
    let Some(spec) = current else {
        return LeaseAction::Create;
    };
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    if holder.as_deref() == Some(me) {
        return LeaseAction::Renew;
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0).max(0));
    let last = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    let expired = match last {
        Some(last) => last.as_second() + duration <= now.as_second(),
        None => true,
    };
    match holder {
        Some(holder) if !expired => LeaseAction::Wait { holder },
        previous_holder => LeaseAction::TakeOver { previous_holder },
    }
}

/// Builds the spec we write when we create, renew or take over the Lease.
pub fn our_lease_spec(
    previous: Option<&LeaseSpec>,
    me: &str,
    now: Timestamp,
    timing: &LeaseTiming,
) -> LeaseSpec {
    let still_ours = previous.and_then(|p| p.holder_identity.as_deref()) == Some(me);
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(timing.lease_duration.as_secs() as i32),
        acquire_time: if still_ours {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if still_ours {
            transitions
        } else {
            transitions + 1
        }),
        ..LeaseSpec::default()
    }
}

/// One election round against the API server. Returns whether we hold the lease now.
pub async fn try_acquire_or_renew(
    api: &Api<Lease>,
    name: &str,
    me: &str,
    timing: &LeaseTiming,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let current = api.get_opt(name).await?;
    let spec = current.as_ref().and_then(|l| l.spec.as_ref());
    let action = decide_lease(spec, me, now);
    let desired = our_lease_spec(spec, me, now, timing);
    let result = match &action {
        LeaseAction::Wait { .. } => return Ok(false),
        LeaseAction::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    ..ObjectMeta::default()
                },
                spec: Some(desired),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        LeaseAction::Renew | LeaseAction::TakeOver { .. } => {
            // `current` is Some here; its resourceVersion makes the write conditional.
            let mut lease = current.clone().unwrap_or_default();
            lease.spec = Some(desired);
            api.replace(name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => {
            if let LeaseAction::TakeOver { previous_holder } = &action {
                info!(lease = name, ?previous_holder, "took over the leader lease");
            }
            Ok(true)
        }
        // Someone else wrote first (409 conflict, or 409 AlreadyExists): not ours this round.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

/// Blocks until this replica holds the lease.
pub async fn acquire(client: Client, namespace: &str, name: &str, me: &str, timing: &LeaseTiming) {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let mut waiting_logged = false;
    loop {
        match try_acquire_or_renew(&api, name, me, timing).await {
            Ok(true) => {
                info!(lease = name, identity = me, "became the leader");
                return;
            }
            Ok(false) if !waiting_logged => {
                info!(
                    lease = name,
                    identity = me,
                    "another replica leads; standing by"
                );
                waiting_logged = true;
            }
            Ok(false) => {}
            Err(err) => warn!(lease = name, error = %err, "leader election round failed; retrying"),
        }
        tokio::time::sleep(timing.retry_period).await;
    }
}

/// Renews the lease until renewal fails for longer than the renew deadline; then returns.
/// The caller must stop acting when this returns.
pub async fn hold(client: Client, namespace: &str, name: &str, me: &str, timing: &LeaseTiming) {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(timing.retry_period).await;
        match try_acquire_or_renew(&api, name, me, timing).await {
            Ok(true) => last_renewed = tokio::time::Instant::now(),
            Ok(false) => {
                warn!(
                    lease = name,
                    identity = me,
                    "the leader lease was taken by another replica"
                );
                return;
            }
            Err(err) => warn!(lease = name, error = %err, "renewing the leader lease failed"),
        }
        if last_renewed.elapsed() > timing.renew_deadline {
            warn!(
                lease = name,
                "could not renew the leader lease before the deadline"
            );
            return;
        }
    }
}

/// Gives the lease up (holder cleared) so a standby takes over at once instead of after it expires.
pub async fn release(
    client: Client,
    namespace: &str,
    name: &str,
    me: &str,
) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let Some(mut lease) = api.get_opt(name).await? else {
        return Ok(());
    };
    if lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        != Some(me)
    {
        return Ok(());
    }
    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = None;
        spec.renew_time = None;
    }
    match api.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("valid time")
    }

    fn held_by(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_string()),
            renew_time: Some(MicroTime(at(renewed))),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn missing_lease_is_created() {
        assert_eq!(decide_lease(None, "a", at(100)), LeaseAction::Create);
    }

    #[test]
    fn own_lease_is_renewed() {
        assert_eq!(
            decide_lease(Some(&held_by("a", 90, 15)), "a", at(100)),
            LeaseAction::Renew
        );
    }

    #[test]
    fn valid_lease_of_another_replica_is_waited_for() {
        assert_eq!(
            decide_lease(Some(&held_by("b", 90, 15)), "a", at(100)),
            LeaseAction::Wait { holder: "b".into() }
        );
    }

    #[test]
    fn expired_lease_of_another_replica_is_taken_over() {
        assert_eq!(
            decide_lease(Some(&held_by("b", 80, 15)), "a", at(100)),
            LeaseAction::TakeOver {
                previous_holder: Some("b".into())
            }
        );
    }

    #[test]
    fn released_lease_is_taken_over_at_once() {
        let released = LeaseSpec::default();
        assert_eq!(
            decide_lease(Some(&released), "a", at(100)),
            LeaseAction::TakeOver {
                previous_holder: None
            }
        );
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_does_not() {
        let timing = LeaseTiming::default();
        let mut previous = held_by("b", 80, 15);
        previous.lease_transitions = Some(3);
        let taken = our_lease_spec(Some(&previous), "a", at(100), &timing);
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(100))));
        let renewed = our_lease_spec(Some(&taken), "a", at(105), &timing);
        assert_eq!(renewed.lease_transitions, Some(4));
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(100))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(105))));
    }
}
