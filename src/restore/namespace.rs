//! The restored namespace: created with the account's labels, isolated by a NetworkPolicy.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::api::{ACCOUNT_LABEL, RESTORED_FROM_LABEL};

/// Label naming the ProjectRestore that created a namespace.
pub const RESTORE_LABEL: &str = "rewind.dev/restore";
/// Annotation with that ProjectRestore's uid: proves a namespace is ours on resume.
pub const RESTORE_UID_ANNOTATION: &str = "rewind.dev/restore-uid";
/// The isolating NetworkPolicy's name.
pub const ISOLATION_POLICY: &str = "rewind-isolate-restored-project";

/// The restored namespace object (pure).
pub fn restored_namespace(
    name: &str,
    account: &str,
    backup: &str,
    restore: &str,
    restore_uid: &str,
) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([
                (ACCOUNT_LABEL.to_string(), account.to_string()),
                (RESTORED_FROM_LABEL.to_string(), backup.to_string()),
                (RESTORE_LABEL.to_string(), restore.to_string()),
            ])),
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

/// Whether an existing namespace was created by this restore.
pub fn is_ours(namespace: &Namespace, restore_uid: &str) -> bool {
    namespace
        .annotations()
        .get(RESTORE_UID_ANNOTATION)
        .map(String::as_str)
        == Some(restore_uid)
}

/// Why a target namespace cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// It exists and was not made by this restore.
    #[error(
        "namespace {0} exists and was not created by this restore: a restore never writes into an existing namespace"
    )]
    Taken(String),
    /// The API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// Creates (or, on resume, finds ours) the namespace and its isolation policy.
pub async fn ensure(
    client: &Client,
    namespace: &Namespace,
    restore_uid: &str,
) -> Result<(), NamespaceError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let name = namespace.name_any();
    match namespaces.create(&PostParams::default(), namespace).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = namespaces.get(&name).await?;
            if !is_ours(&existing, restore_uid) {
                return Err(NamespaceError::Taken(name));
            }
        }
        Err(err) => return Err(err.into()),
    }
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &name);
    policies
        .patch(
            ISOLATION_POLICY,
            &PatchParams::apply(crate::status::FIELD_MANAGER).force(),
            &Patch::Apply(isolation_policy(&name)),
        )
        .await?;
    Ok(())
}

/// Deletes a namespace if this restore created it (idempotent).
pub async fn delete_if_ours(
    client: &Client,
    name: &str,
    restore_uid: &str,
) -> Result<(), kube::Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match namespaces.get_opt(name).await? {
        Some(existing) if is_ours(&existing, restore_uid) => {
            match namespaces.delete(name, &DeleteParams::default()).await {
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
        let ns = restored_namespace("shop-restore-1", "acme", "nightly", "undo", "uid-1");
        assert_eq!(
            ns.labels().get(ACCOUNT_LABEL).map(String::as_str),
            Some("acme")
        );
        assert_eq!(
            ns.labels().get(RESTORED_FROM_LABEL).map(String::as_str),
            Some("nightly")
        );
        assert!(is_ours(&ns, "uid-1"));
        assert!(!is_ours(&ns, "uid-2"));
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
