//! Leader election on a coordination.k8s.io Lease: a pure decision plus thin I/O.
//!
//! Every write carries the Lease's `resourceVersion`, so two replicas that
//! read the same expired Lease cannot both win: the API server rejects the
//! second write with a conflict. A replica that cannot renew before its lease
//! runs out stops acting (the process exits and is restarted as a standby). Expiry of another
//! replica's lease is judged on this replica's own monotonic clock, never by comparing another
//! node's timestamps with ours.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tracing::{info, warn};

pub use crate::lease_observer::LeaseObserver;

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

/// Decides what to do with the current Lease (pure). `unchanged_for` is how long this replica
/// has seen the very same lease record (holder and times) on its own monotonic clock: another
/// node's lease expires when it has not been renewed for its duration *as we observe it*, never
/// by comparing that node's timestamps with our wall clock (clocks differ between nodes).
pub fn decide_lease(current: Option<&LeaseSpec>, me: &str, unchanged_for: Duration) -> LeaseAction {
    let Some(spec) = current else {
        return LeaseAction::Create;
    };
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    if holder.as_deref() == Some(me) {
        return LeaseAction::Renew;
    }
    let duration =
        Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0));
    match holder {
        Some(holder) if unchanged_for < duration => LeaseAction::Wait { holder },
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
    observer: &mut LeaseObserver,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let current = api.get_opt(name).await?;
    let spec = current.as_ref().and_then(|l| l.spec.as_ref());
    let action = decide_lease(spec, me, observer.observe(spec, std::time::Instant::now()));
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
    let mut observer = LeaseObserver::default();
    loop {
        // A round that hangs (an API server that accepts and never answers) is abandoned.
        let round = tokio::time::timeout(
            timing.renew_deadline,
            try_acquire_or_renew(&api, name, me, timing, &mut observer),
        )
        .await
        .unwrap_or(Ok(false));
        match round {
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
    let mut observer = LeaseObserver::default();
    loop {
        tokio::time::sleep(timing.retry_period).await;
        // Each renewal gets only what is left before the deadline: a request that hangs cannot
        // keep a replica acting as leader after its lease may have passed to another.
        let left = timing
            .renew_deadline
            .saturating_sub(last_renewed.elapsed())
            .max(Duration::from_millis(100));
        let round = tokio::time::timeout(
            left,
            try_acquire_or_renew(&api, name, me, timing, &mut observer),
        )
        .await;
        let Ok(round) = round else {
            warn!(
                lease = name,
                "renewing the leader lease timed out: could not renew before the deadline"
            );
            return;
        };
        match round {
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

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn missing_lease_is_created() {
        assert_eq!(decide_lease(None, "a", Duration::ZERO), LeaseAction::Create);
    }

    #[test]
    fn own_lease_is_renewed() {
        assert_eq!(
            decide_lease(Some(&held_by("a", 90, 15)), "a", Duration::ZERO),
            LeaseAction::Renew
        );
    }

    #[test]
    fn another_replicas_lease_is_waited_for_until_we_saw_it_unchanged_for_its_duration() {
        // Renewed "long ago" by the other node's clock: that alone proves nothing.
        let stale_looking = held_by("b", 0, 15);
        assert_eq!(
            decide_lease(Some(&stale_looking), "a", Duration::ZERO),
            LeaseAction::Wait { holder: "b".into() }
        );
        assert_eq!(
            decide_lease(Some(&stale_looking), "a", 14 * SECOND),
            LeaseAction::Wait { holder: "b".into() }
        );
        assert_eq!(
            decide_lease(Some(&stale_looking), "a", 15 * SECOND),
            LeaseAction::TakeOver {
                previous_holder: Some("b".into())
            }
        );
    }

    #[test]
    fn a_renewed_record_starts_the_observation_over() {
        let start = std::time::Instant::now();
        let mut observer = LeaseObserver::default();
        let first = held_by("b", 100, 15);
        assert_eq!(observer.observe(Some(&first), start), Duration::ZERO);
        assert_eq!(
            observer.observe(Some(&first), start + 10 * SECOND),
            10 * SECOND
        );
        let renewed = held_by("b", 101, 15);
        assert_eq!(
            observer.observe(Some(&renewed), start + 11 * SECOND),
            Duration::ZERO
        );
        assert_eq!(
            observer.observe(Some(&renewed), start + 14 * SECOND),
            3 * SECOND
        );
    }

    #[test]
    fn released_lease_is_taken_over_at_once() {
        let released = LeaseSpec::default();
        assert_eq!(
            decide_lease(Some(&released), "a", Duration::ZERO),
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
