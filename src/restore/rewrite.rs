//! A backed-up manifest made fit for a new namespace (pure): namespace rewritten,
//! owner references dropped, side effects defused, route-stealing objects skipped.

use serde_json::Value;

/// What to do with one backed-up object.
#[derive(Clone, Debug, PartialEq)]
pub enum Rewritten {
    /// Create this object in the target namespace; each change made to keep the copy inert is
    /// listed (shown in `status.adjusted`).
    Create(Value, Vec<String>),
    /// Leave it out, with the reason shown in `status.skipped`.
    Skip(String),
}

/// Gateway API kinds that claim hostnames or addresses: a copy would attach to the same
/// Gateway and hostnames, or claim the same listeners.
const ROUTE_KINDS: &[&str] = &[
    "HTTPRoute",
    "GRPCRoute",
    "TLSRoute",
    "TCPRoute",
    "UDPRoute",
    "Gateway",
    "ListenerSet",
];

/// Custom resource groups of well-known add-ons whose objects claim hostnames, publish DNS or
/// open network paths: a copy would take the original's traffic or reopen the isolated copy.
/// (Any other custom resource is restored as it is; docs/security.md says so.)
const EXPOSING_GROUPS: &[(&str, &str)] = &[
    (
        "externaldns.k8s.io",
        "publishes DNS records for the original's names",
    ),
    (
        "networking.istio.io",
        "routes the original's hosts or opens the mesh",
    ),
    ("security.istio.io", "changes who may reach the copy"),
    ("traefik.io", "routes the original's hosts"),
    ("traefik.containo.us", "routes the original's hosts"),
    ("projectcontour.io", "routes the original's hosts"),
    (
        "cilium.io",
        "is a network policy that could reopen the copy",
    ),
    (
        "crd.projectcalico.org",
        "is a network policy that could reopen the copy",
    ),
    (
        "projectcalico.org",
        "is a network policy that could reopen the copy",
    ),
    (
        "cert-manager.io",
        "requests certificates for the original's hosts",
    ),
    (
        "acme.cert-manager.io",
        "requests certificates for the original's hosts",
    ),
];

/// Custom resource groups of GitOps controllers that act on their own (apply, prune, upgrade):
/// restored with `spec.suspend: true` so the copy does not deploy into or prune anything.
const SUSPENDABLE_GROUPS: &[&str] = &[
    "kustomize.toolkit.fluxcd.io",
    "helm.toolkit.fluxcd.io",
    "source.toolkit.fluxcd.io",
    "image.toolkit.fluxcd.io",
];

/// Annotations through which external-dns publishes DNS records for an object.
const EXTERNAL_DNS_PREFIX: &str = "external-dns.alpha.kubernetes.io/";

/// Service fields that expose it outside the cluster.
const EXPOSING_SERVICE_FIELDS: &[&str] = &[
    "externalIPs",
    "loadBalancerIP",
    "loadBalancerSourceRanges",
    "loadBalancerClass",
    "externalTrafficPolicy",
    "healthCheckNodePort",
    "allocateLoadBalancerNodePorts",
];

/// Why a NetworkPolicy would reopen the isolated copy, if it would: a rule that admits peers
/// outside the namespace (an ipBlock, a namespaceSelector, or no peer list at all = everyone).
fn reopens_the_copy(policy: &Value) -> Option<&'static str> {
    let spec = &policy["spec"];
    for (rules, peers) in [("ingress", "from"), ("egress", "to")] {
        for rule in spec[rules].as_array().into_iter().flatten() {
            let Some(list) = rule[peers].as_array().filter(|l| !l.is_empty()) else {
                return Some("it has a rule open to every peer");
            };
            if list.iter().any(|peer| {
                peer.get("ipBlock").is_some() || peer.get("namespaceSelector").is_some()
            }) {
                return Some(
                    "it admits peers outside the namespace (ipBlock or namespaceSelector)",
                );
            }
        }
    }
    None
}

fn group_of(api_version: &str) -> &str {
    api_version
        .rsplit_once('/')
        .map(|(group, _)| group)
        .unwrap_or("")
}

/// Rewrites one object from `source` into `target` (pure).
pub fn rewrite_for_restore(mut object: Value, source: &str, target: &str) -> Rewritten {
    let kind = object["kind"].as_str().unwrap_or_default().to_string();
    let group = group_of(object["apiVersion"].as_str().unwrap_or_default()).to_string();
    if kind == "Ingress" && group == "networking.k8s.io" {
        return Rewritten::Skip(
            "an Ingress would take the original project's hosts; create one with new hosts by hand if the copy needs traffic".into(),
        );
    }
    if group == "gateway.networking.k8s.io" && ROUTE_KINDS.contains(&kind.as_str()) {
        return Rewritten::Skip(format!(
            "a {kind} would attach to the original's Gateway and hostnames; create one with new hostnames by hand"
        ));
    }
    if let Some((_, what)) = EXPOSING_GROUPS.iter().find(|(g, _)| *g == group) {
        return Rewritten::Skip(format!(
            "a {kind} ({group}) {what}; create it by hand for the copy if it needs one"
        ));
    }
    if kind == "NetworkPolicy"
        && group == "networking.k8s.io"
        && let Some(why) = reopens_the_copy(&object)
    {
        return Rewritten::Skip(format!(
            "this NetworkPolicy would reopen the isolated copy ({why}); add it back by hand when the copy should take traffic"
        ));
    }
    let mut changes = Vec::new();
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert("namespace".into(), Value::String(target.to_string()));
        // Owners get new UIDs when recreated; a stale reference would have the copy garbage-collected.
        metadata.remove("ownerReferences");
        for server_owned in [
            "uid",
            "resourceVersion",
            "managedFields",
            "creationTimestamp",
            "generation",
            "selfLink",
        ] {
            metadata.remove(server_owned);
        }
        if let Some(annotations) = metadata
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
        {
            let before = annotations.len();
            annotations.retain(|key, _| !key.starts_with(EXTERNAL_DNS_PREFIX));
            if annotations.len() != before {
                changes.push(
                    "external-dns annotations removed: the copy publishes no DNS records"
                        .to_string(),
                );
            }
        }
    }
    if let Some(object) = object.as_object_mut() {
        object.remove("status");
    }
    match (group.as_str(), kind.as_str()) {
        ("batch", "CronJob" | "Job") => {
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut)
                && spec.insert("suspend".into(), Value::Bool(true)) != Some(Value::Bool(true))
            {
                changes.push(format!(
                    "suspended: the copy's {kind} does not run until you set spec.suspend to false"
                ));
            }
        }
        (group, _) if SUSPENDABLE_GROUPS.contains(&group) => {
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut)
                && spec.insert("suspend".into(), Value::Bool(true)) != Some(Value::Bool(true))
            {
                changes.push(format!(
                    "suspended: the copy's {kind} does not reconcile until you set spec.suspend to false"
                ));
            }
        }
        ("", "Service") => {
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                let exposed_type = matches!(
                    spec.get("type").and_then(Value::as_str),
                    Some("LoadBalancer" | "NodePort")
                );
                let mut exposed_fields = false;
                for field in EXPOSING_SERVICE_FIELDS {
                    exposed_fields |= spec.remove(*field).is_some();
                }
                if exposed_type {
                    let was = spec.insert("type".into(), Value::String("ClusterIP".into()));
                    for port in spec
                        .get_mut("ports")
                        .and_then(Value::as_array_mut)
                        .into_iter()
                        .flatten()
                    {
                        if let Some(port) = port.as_object_mut() {
                            port.remove("nodePort");
                        }
                    }
                    changes.push(format!(
                        "type {} changed to ClusterIP: the copy is reachable only inside the cluster",
                        was.as_ref().and_then(Value::as_str).unwrap_or_default()
                    ));
                } else if exposed_fields {
                    changes.push(
                        "external IPs and load-balancer settings removed: the copy is reachable only inside the cluster"
                            .to_string(),
                    );
                }
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding") => {
            if let Some(subjects) = object.get_mut("subjects").and_then(Value::as_array_mut) {
                for subject in subjects {
                    if subject["namespace"].as_str() == Some(source) {
                        subject["namespace"] = Value::String(target.to_string());
                    }
                }
            }
        }
        ("", "PersistentVolumeClaim") => {
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("volumeName");
                spec.remove("dataSource");
                spec.remove("dataSourceRef");
            }
        }
        _ => {}
    }
    Rewritten::Create(object, changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn created(rewritten: Rewritten) -> Value {
        created_with_changes(rewritten).0
    }

    fn created_with_changes(rewritten: Rewritten) -> (Value, Vec<String>) {
        match rewritten {
            Rewritten::Create(object, changes) => (object, changes),
            Rewritten::Skip(reason) => panic!("unexpected skip: {reason}"),
        }
    }

    #[test]
    fn jobs_are_restored_suspended_and_the_change_is_listed() {
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"}, "spec": {"template": {}}});
        let (out, changes) = created_with_changes(rewrite_for_restore(job, "a", "b"));
        assert_eq!(out["spec"]["suspend"], true);
        assert!(changes[0].contains("suspended"), "{changes:?}");
        let already = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"}, "spec": {"suspend": true}});
        assert!(
            created_with_changes(rewrite_for_restore(already, "a", "b"))
                .1
                .is_empty()
        );
    }

    #[test]
    fn load_balancer_and_node_port_services_come_back_as_cluster_ip() {
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"type": "LoadBalancer", "loadBalancerIP": "203.0.113.7", "externalTrafficPolicy": "Local",
                     "externalIPs": ["198.51.100.1"], "ports": [{"port": 80, "nodePort": 30080}]}});
        let (out, changes) = created_with_changes(rewrite_for_restore(service, "a", "b"));
        assert_eq!(
            out["spec"],
            json!({"type": "ClusterIP", "ports": [{"port": 80}]})
        );
        assert!(
            changes[0].contains("LoadBalancer changed to ClusterIP"),
            "{changes:?}"
        );
        let node_port = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "np"},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30081}]}});
        assert_eq!(
            created(rewrite_for_restore(node_port, "a", "b"))["spec"]["type"],
            "ClusterIP"
        );
        let internal = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"}, "spec": {"ports": [{"port": 5432}]}});
        assert!(
            created_with_changes(rewrite_for_restore(internal, "a", "b"))
                .1
                .is_empty()
        );
    }

    #[test]
    fn external_dns_annotations_are_removed_from_any_object() {
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web",
            "annotations": {"external-dns.alpha.kubernetes.io/hostname": "shop.example.com", "team": "web"}}, "spec": {}});
        let (out, changes) = created_with_changes(rewrite_for_restore(service, "a", "b"));
        assert_eq!(out["metadata"]["annotations"], json!({"team": "web"}));
        assert!(changes.iter().any(|c| c.contains("external-dns")));
    }

    #[test]
    fn add_on_objects_that_route_publish_or_open_are_skipped_and_gitops_is_suspended() {
        for (api_version, kind) in [
            ("externaldns.k8s.io/v1alpha1", "DNSEndpoint"),
            ("networking.istio.io/v1", "VirtualService"),
            ("traefik.io/v1alpha1", "IngressRoute"),
            ("cilium.io/v2", "CiliumNetworkPolicy"),
            ("cert-manager.io/v1", "Certificate"),
        ] {
            let object = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}, "spec": {}});
            assert!(
                matches!(rewrite_for_restore(object, "a", "b"), Rewritten::Skip(_)),
                "{kind}"
            );
        }
        let release = json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "metadata": {"name": "app"},
            "spec": {"targetNamespace": "a"}});
        let (out, changes) = created_with_changes(rewrite_for_restore(release, "a", "b"));
        assert_eq!(out["spec"]["suspend"], true);
        assert!(changes[0].contains("does not reconcile"), "{changes:?}");
        let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}});
        assert!(
            created_with_changes(rewrite_for_restore(widget, "a", "b"))
                .1
                .is_empty()
        );
    }

    #[test]
    fn network_policies_that_reach_outside_the_namespace_are_skipped() {
        let open_to_all = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "allow-all"},
            "spec": {"podSelector": {}, "ingress": [{}]}});
        assert!(
            matches!(rewrite_for_restore(open_to_all, "a", "b"), Rewritten::Skip(reason) if reason.contains("every peer"))
        );
        let from_anywhere = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "lb"},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}});
        assert!(matches!(
            rewrite_for_restore(from_anywhere, "a", "b"),
            Rewritten::Skip(_)
        ));
        let egress_out = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "out"},
            "spec": {"podSelector": {}, "egress": [{"to": [{"namespaceSelector": {}}]}]}});
        assert!(matches!(
            rewrite_for_restore(egress_out, "a", "b"),
            Rewritten::Skip(_)
        ));
        let inside = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "web-to-db"},
            "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}});
        assert!(matches!(
            rewrite_for_restore(inside, "a", "b"),
            Rewritten::Create(..)
        ));
    }

    #[test]
    fn namespace_is_rewritten_and_owner_references_dropped() {
        let object = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "shop", "ownerReferences": [{"uid": "x"}], "uid": "y"}});
        let out = created(rewrite_for_restore(object, "shop", "shop-restore-1"));
        assert_eq!(
            out["metadata"],
            json!({"name": "a", "namespace": "shop-restore-1"})
        );
    }

    #[test]
    fn cronjobs_are_restored_suspended() {
        let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"}, "spec": {"suspend": false, "schedule": "* * * * *"}});
        assert_eq!(
            created(rewrite_for_restore(cron, "a", "b"))["spec"]["suspend"],
            true
        );
    }

    #[test]
    fn role_binding_subjects_follow_the_project_but_foreign_ones_stay() {
        let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "rb"},
            "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "shop"},
                         {"kind": "ServiceAccount", "name": "ci", "namespace": "tools"}]});
        let out = created(rewrite_for_restore(binding, "shop", "shop-r"));
        assert_eq!(out["subjects"][0]["namespace"], "shop-r");
        assert_eq!(out["subjects"][1]["namespace"], "tools");
    }

    #[test]
    fn ingresses_and_gateway_routes_are_skipped_with_a_reason() {
        let ingress = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"}});
        assert!(
            matches!(rewrite_for_restore(ingress, "a", "b"), Rewritten::Skip(reason) if reason.contains("hosts"))
        );
        let route = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web"}});
        assert!(matches!(
            rewrite_for_restore(route, "a", "b"),
            Rewritten::Skip(_)
        ));
    }

    #[test]
    fn pvcs_lose_binding_and_old_data_sources() {
        let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
            "spec": {"volumeName": "pv-1", "dataSource": {"kind": "VolumeSnapshot"}, "storageClassName": "fast"}});
        assert_eq!(
            created(rewrite_for_restore(pvc, "a", "b"))["spec"],
            json!({"storageClassName": "fast"})
        );
    }
}
