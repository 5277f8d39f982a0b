//! The restored namespace: created with the account's labels, isolated by a NetworkPolicy.

use crate::api::{RESTORE_LABEL, RESTORE_UID_ANNOTATION};
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::api::{ACCOUNT_LABEL, RESTORED_FROM_LABEL};

/// The isolating NetworkPolicy's name.
pub const ISOLATION_POLICY: &str = "rewind-isolate-restored-project";

/// The restored namespace object (pure): the account's labels, and the source's Pod Security
/// labels so the copy is no weaker than the project it came from.
pub fn restored_namespace(
    name: &str,
    account: &str,
    backup: &str,
    restore: &str,
    restore_uid: &str,
    pod_security: &BTreeMap<String, String>,
) -> Namespace {
    let mut labels: BTreeMap<String, String> = pod_security
        .iter()
        .filter(|(key, _)| key.starts_with(crate::api::POD_SECURITY_PREFIX))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    labels.extend([
        (ACCOUNT_LABEL.to_string(), account.to_string()),
        (RESTORED_FROM_LABEL.to_string(), backup.to_string()),
        (RESTORE_LABEL.to_string(), restore.to_string()),
    ]);
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                RESTORE_UID_ANNOTATION.to_string(),
                restore_uid.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// Default-deny in and out, except traffic inside the namespace and DNS (pure).
pub fn isolation_policy(namespace: &str) -> serde_json::Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": ISOLATION_POLICY, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "rewind"}},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {}}]}],
            "egress": [
                {"to": [{"podSelector": {}}]},
                {"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
            ]
        }
    })
}

/// What proves a namespace was made by one restore: its uid in the namespace's annotation (which
/// admission lets only the operator and platform admins write) and a namespace no older than the
/// restore (both times from the API server's clock), so one that existed before is never adopted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreIdentity {
    /// The ProjectRestore's uid.
    pub uid: String,
    /// When the ProjectRestore was created.
    pub created: Option<jiff::Timestamp>,
}

impl RestoreIdentity {
    /// The identity of `restore`.
    pub fn of(restore: &crate::api::ProjectRestore) -> Self {
        Self {
            uid: restore.metadata.uid.clone().unwrap_or_default(),
            created: restore.metadata.creation_timestamp.as_ref().map(|t| t.0),
        }
    }
}

/// Whether an existing namespace was created by this restore.
pub fn is_ours(namespace: &Namespace, restore: &RestoreIdentity) -> bool {
    let annotated = !restore.uid.is_empty()
        && namespace
            .annotations()
            .get(RESTORE_UID_ANNOTATION)
            .map(String::as_str)
            == Some(restore.uid.as_str());
    let not_older = match (
        namespace.metadata.creation_timestamp.as_ref(),
        restore.created,
    ) {
        (Some(namespace_created), Some(restore_created)) => namespace_created.0 >= restore_created,
        // A namespace being built here has no timestamp yet; a stored one always has.
        (None, _) => true,
        (Some(_), None) => false,
    };
    annotated && not_older
}

/// Why a target namespace cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// It exists and was not made by this restore.
    #[error(
        "namespace {0} exists and was not created by this restore: a restore never writes into an existing namespace"
    )]
    Taken(String),
    /// The isolation policy could not be built (a bug).
    #[error("the isolating NetworkPolicy is malformed: {0}")]
    Policy(String),
    /// The API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// Creates (or, on resume, finds ours) the namespace and its isolation policy.
pub async fn ensure(
    client: &Client,
    namespace: &Namespace,
    restore: &RestoreIdentity,
) -> Result<(), NamespaceError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let name = namespace.name_any();
    match namespaces.create(&PostParams::default(), namespace).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = namespaces.get(&name).await?;
            if !is_ours(&existing, restore) {
                return Err(NamespaceError::Taken(name));
            }
        }
        Err(err) => return Err(err.into()),
    }
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &name);
    let policy: NetworkPolicy = serde_json::from_value(isolation_policy(&name))
        .map_err(|e| NamespaceError::Policy(e.to_string()))?;
    let params = PostParams {
        field_manager: Some(crate::status::FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    match policies.create(&params, &policy).await {
        Ok(_) => Ok(()),
        // Made by an earlier attempt of this restore, in its own namespace.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Deletes a namespace if this restore created it (idempotent).
pub async fn delete_if_ours(
    client: &Client,
    name: &str,
    restore: &RestoreIdentity,
) -> Result<(), kube::Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match namespaces.get_opt(name).await? {
        Some(existing) if is_ours(&existing, restore) => {
            match namespaces
                .delete(name, &crate::delete::exactly(existing.metadata.uid.clone()))
                .await
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                Err(err) => Err(err),
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restored_namespace_carries_the_account_and_its_origin() {
        let ns = restored_namespace(
            "shop-restore-1",
            "acme",
            "nightly",
            "undo",
            "uid-1",
            &BTreeMap::new(),
        );
        assert_eq!(
            ns.labels().get(ACCOUNT_LABEL).map(String::as_str),
            Some("acme")
        );
        assert_eq!(
            ns.labels().get(RESTORED_FROM_LABEL).map(String::as_str),
            Some("nightly")
        );
        let identity = |uid: &str| RestoreIdentity {
            uid: uid.into(),
            created: Some(jiff::Timestamp::from_second(100).expect("time")),
        };
        assert!(is_ours(&ns, &identity("uid-1")));
        assert!(!is_ours(&ns, &identity("uid-2")));
    }

    #[test]
    fn a_namespace_older_than_the_restore_is_never_ours_whatever_its_annotation() {
        let mut ns = restored_namespace(
            "shop-r",
            "acme",
            "nightly",
            "undo",
            "uid-1",
            &BTreeMap::new(),
        );
        let restore = RestoreIdentity {
            uid: "uid-1".into(),
            created: Some(jiff::Timestamp::from_second(100).expect("time")),
        };
        ns.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::from_second(99).expect("time"),
            ));
        assert!(!is_ours(&ns, &restore), "existed before the restore");
        ns.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::from_second(101).expect("time"),
            ));
        assert!(
            is_ours(&ns, &restore),
            "made after the restore, with its uid"
        );
        let no_uid = RestoreIdentity {
            uid: String::new(),
            ..restore
        };
        let mut unannotated = ns.clone();
        unannotated.metadata.annotations = Some(BTreeMap::from([(
            RESTORE_UID_ANNOTATION.to_string(),
            String::new(),
        )]));
        assert!(
            !is_ours(&unannotated, &no_uid),
            "an empty uid proves nothing"
        );
    }

    #[test]
    fn restored_namespace_keeps_the_sources_pod_security_labels_only() {
        let recorded = BTreeMap::from([
            (
                "pod-security.kubernetes.io/enforce".to_string(),
                "restricted".to_string(),
            ),
            ("rewind.dev/account".to_string(), "other".to_string()),
        ]);
        let ns = restored_namespace("shop-r", "acme", "nightly", "undo", "uid-1", &recorded);
        let labels = ns.labels();
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
        assert_eq!(
            labels[ACCOUNT_LABEL], "acme",
            "a recorded label never overrides the account"
        );
    }

    #[test]
    fn isolation_allows_only_the_namespace_itself_and_dns() {
        let policy = isolation_policy("shop-r");
        assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(
            policy["spec"]["ingress"],
            json!([{"from": [{"podSelector": {}}]}])
        );
        assert_eq!(policy["spec"]["egress"][1]["ports"][0]["port"], 53);
    }
}
