//! What the backup controller reads from the cluster (client required).

use k8s_openapi::api::core::v1::Namespace;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::decide::ObservedProject;
use crate::api::{ACCOUNT_LABEL, AccountBackup, BUSY_ANNOTATION, POD_SECURITY_PREFIX};

/// The account's project namespaces, sorted by name.
pub async fn projects(client: &Client, account: &str) -> Result<Vec<ObservedProject>, kube::Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let list = namespaces
        .list(&ListParams::default().labels(&format!("{ACCOUNT_LABEL}={account}")))
        .await?;
    let mut projects: Vec<ObservedProject> = list
        .items
        .iter()
        .map(|ns| ObservedProject {
            name: ns.name_any(),
            busy: ns.annotations().get(BUSY_ANNOTATION).cloned(),
            terminating: ns.metadata.deletion_timestamp.is_some(),
            pod_security: pod_security_labels(ns.labels()),
        })
        .collect();
    projects.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(projects)
}

/// The Pod Security Admission labels among a namespace's labels.
pub fn pod_security_labels(
    labels: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(key, _)| key.starts_with(POD_SECURITY_PREFIX))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// The backup as the API server holds it now, not as the cache last saw it.
pub async fn live(
    api: &Api<AccountBackup>,
    backup: &AccountBackup,
) -> Result<Option<AccountBackup>, kube::Error> {
    api.get_opt(&backup.name_any()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pod_security_labels_are_carried() {
        let labels = std::collections::BTreeMap::from([
            (
                "pod-security.kubernetes.io/enforce".to_string(),
                "restricted".to_string(),
            ),
            (
                "pod-security.kubernetes.io/enforce-version".to_string(),
                "latest".to_string(),
            ),
            ("rewind.dev/account".to_string(), "acme".to_string()),
            ("team".to_string(), "web".to_string()),
        ]);
        let kept = pod_security_labels(&labels);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept["pod-security.kubernetes.io/enforce"], "restricted");
    }
}
