//! Creating a project's restored objects at the API server's pace: a sliding window of
//! concurrent creates that waits only where the kind changes (dependency order: every object of
//! one kind exists before the first of the next kind is created), with creates the API server
//! asks to slow down (429, API Priority and Fairness) or fails transiently retried.

use std::collections::HashMap;
use std::pin::Pin;

use futures::stream::FuturesUnordered;
use futures::{Future, StreamExt};
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::{Api, Client};
use serde_json::Value;

use super::decide::create_retry;

/// The field manager of restored objects.
pub const RESTORE_MANAGER: &str = "rewind-restore";

/// Creates in flight at once: enough to keep the API server busy without queueing at it.
pub const CREATE_CONCURRENCY: usize = 32;

type Create = Pin<Box<dyn Future<Output = (Value, Result<(), String>)> + Send>>;

/// Creates objects into one namespace, in the order given, `CREATE_CONCURRENCY` at a time.
pub struct Creator {
    client: Client,
    namespace: String,
    /// The resource of each kind seen, or why the cluster does not serve it.
    resources: HashMap<(String, String), Result<ApiResource, String>>,
    /// The (apiVersion, kind) of the creates in flight.
    current: Option<(String, String)>,
    in_flight: FuturesUnordered<Create>,
}

impl Creator {
    /// A creator for `namespace`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_string(),
            resources: HashMap::new(),
            current: None,
            in_flight: FuturesUnordered::new(),
        }
    }

    /// Starts creating `object`; returns the creates that finished meanwhile (object, result).
    /// Waits for every create in flight first when the kind changes, and for one when the
    /// window is full.
    pub async fn push(&mut self, object: Value) -> Vec<(Value, Result<(), String>)> {
        let kind = (
            object["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            object["kind"].as_str().unwrap_or_default().to_string(),
        );
        let mut finished = Vec::new();
        if self.current.as_ref() != Some(&kind) {
            finished.extend(self.finish().await);
            self.current = Some(kind.clone());
        }
        while self.in_flight.len() >= CREATE_CONCURRENCY {
            finished.extend(self.in_flight.next().await);
        }
        let resource = self.resource(&kind).await;
        match resource {
            Ok(resource) => {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(self.client.clone(), &self.namespace, &resource);
                self.in_flight.push(Box::pin(async move {
                    let result = create(&api, &object).await;
                    (object, result)
                }));
            }
            Err(reason) => finished.push((object, Err(reason))),
        }
        finished
    }

    /// Waits for every create in flight; returns them (object, result).
    pub async fn finish(&mut self) -> Vec<(Value, Result<(), String>)> {
        let mut finished = Vec::new();
        while let Some(done) = self.in_flight.next().await {
            finished.push(done);
        }
        finished
    }

    /// The API resource of (apiVersion, kind), discovered once per kind.
    async fn resource(&mut self, kind: &(String, String)) -> Result<ApiResource, String> {
        if let Some(known) = self.resources.get(kind) {
            return known.clone();
        }
        let (api_version, name) = kind;
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, name);
        let resolved = match kube::discovery::pinned_kind(&self.client, &gvk).await {
            Ok((resource, _)) => Ok(resource),
            Err(kube::Error::Api(status)) if status.code == 404 => Err(format!(
                "the cluster does not serve {api_version} {name}: install its CRD, then restore again"
            )),
            // A transient failure is not remembered: the next object of the kind asks again.
            Err(err) => return Err(format!("discovering {api_version} {name} failed: {err}")),
        };
        self.resources.insert(kind.clone(), resolved.clone());
        resolved
    }
}

/// Creates one object. Create only: the operator may create a project's objects but never patch
/// one (its ClusterRole has no patch on them). The namespace is the restore's own, so an object
/// that exists already was created by an earlier attempt of this restore and is kept as it is.
async fn create(api: &Api<DynamicObject>, object: &Value) -> Result<(), String> {
    let object: DynamicObject = serde_json::from_value(object.clone())
        .map_err(|e| format!("the backed-up manifest is not an object: {e}"))?;
    let params = PostParams {
        field_manager: Some(RESTORE_MANAGER.to_string()),
        ..PostParams::default()
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (code, retry_after) = match api.create(&params, &object).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => return Ok(()),
            Err(kube::Error::Api(status)) => {
                let retry_after = status
                    .details
                    .as_ref()
                    .map(|d| d.retry_after_seconds)
                    .filter(|s| *s > 0)
                    .map(|s| std::time::Duration::from_secs(u64::from(s)));
                match create_retry(Some(status.code), attempt, retry_after) {
                    Some(wait) => (Some(status.code), wait),
                    None => return Err(format!("creating it failed: {}", status.message)),
                }
            }
            Err(err) => match create_retry(None, attempt, None) {
                Some(wait) => (None, wait),
                None => return Err(format!("creating it failed: {err}")),
            },
        };
        tracing::debug!(?code, attempt, wait = ?retry_after, "create retried");
        tokio::time::sleep(retry_after).await;
    }
}
