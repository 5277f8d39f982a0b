//! The Helm chart on the test bed: it installs, the operator's RBAC is least privilege,
//! the account-ownership policy admits owners only, and config/default is the chart rendered.

mod support;

use serde::Deserialize;

use support::{Bed, repo_root, unique};

fn can(bed: &Bed, subject: &[&str], verb: &str, resource: &str, namespace: Option<&str>) -> bool {
    let mut args = vec!["auth", "can-i", verb, resource];
    match namespace {
        Some(ns) => args.extend(["-n", ns]),
        None => args.push("--all-namespaces"),
    }
    args.extend_from_slice(subject);
    bed.kubectl(&args)
        .map(|answer| answer.trim() == "yes")
        .unwrap_or(false)
}

#[test]
fn chart_installs_with_least_privilege_rbac_and_the_account_ownership_policy() {
    let bed = Bed::get();
    let release_ns = bed.namespace("rewind-chart");
    let ns = release_ns.name.as_str();
    let chart = repo_root().join("charts/rewind");
    // A release of its own: the operator's cluster-wide objects are named after the release.
    let release = unique("rw");
    bed.helm(&[
        "install",
        &release,
        &chart.to_string_lossy(),
        "-n",
        ns,
        "--set",
        "repository.persistence.enabled=false",
    ])
    .expect("helm install");
    let _uninstall = Uninstall {
        bed: &bed,
        namespace: ns.to_string(),
        release: release.clone(),
    };
    assert!(
        bed.jsonpath(
            &["-n", ns, "deployment", &format!("{release}-operator")],
            "{.spec.template.spec.serviceAccountName}"
        )
        .as_deref()
            == Some(format!("{release}-operator").as_str())
    );

    bed.helm(&[
        "upgrade",
        &release,
        &chart.to_string_lossy(),
        "-n",
        ns,
        "--reuse-values",
        "--set",
        "operator.maxConcurrentBackups=8",
    ])
    .expect("helm upgrade");
    let env = bed
        .jsonpath(
            &["-n", ns, "deployment", &format!("{release}-operator")],
            "{.spec.template.spec.containers[0].env}",
        )
        .unwrap_or_default();
    assert!(
        env.contains("REWIND_MAX_CONCURRENT_BACKUPS") && env.contains("\"8\""),
        "helm upgrade changed the Deployment: {env}"
    );
    let operator = format!("system:serviceaccount:{ns}:{release}-operator");
    let sa = ["--as", operator.as_str()];
    // What the operator's work needs.
    assert!(
        can(&bed, &sa, "list", "secrets", None),
        "a backup reads every namespaced type"
    );
    assert!(
        can(&bed, &sa, "create", "pods/exec", Some("default")),
        "database dumps run over exec"
    );
    assert!(
        can(&bed, &sa, "create", "namespaces", None),
        "a restore creates its namespace"
    );
    assert!(can(
        &bed,
        &sa,
        "patch",
        "accountbackups.rewind.dev/status",
        None
    ));
    assert!(
        can(&bed, &sa, "update", "leases.coordination.k8s.io", Some(ns)),
        "leader and account locks in its namespace"
    );
    // What it must not do.
    assert!(
        !can(&bed, &sa, "delete", "secrets", None),
        "the operator never deletes a project's objects"
    );
    assert!(!can(&bed, &sa, "delete", "deployments.apps", None));
    assert!(
        !can(
            &bed,
            &sa,
            "update",
            "leases.coordination.k8s.io",
            Some("kube-system")
        ),
        "leases only in its own namespace"
    );
    assert!(
        !can(&bed, &sa, "update", "configmaps", None),
        "restores create; they never update in place"
    );
    // Create-only on what a project may hold: nothing that exists can be changed by the operator.
    for (verb, resource) in [
        ("patch", "secrets"),
        ("patch", "deployments.apps"),
        ("patch", "namespaces"),
        ("update", "namespaces"),
        ("patch", "nodes"),
        ("patch", "clusterroles.rbac.authorization.k8s.io"),
        ("delete", "clusterrolebindings.rbac.authorization.k8s.io"),
        (
            "patch",
            "validatingadmissionpolicies.admissionregistration.k8s.io",
        ),
        (
            "delete",
            "validatingadmissionpolicies.admissionregistration.k8s.io",
        ),
        (
            "update",
            "mutatingadmissionpolicies.admissionregistration.k8s.io",
        ),
        ("patch", "customresourcedefinitions.apiextensions.k8s.io"),
        ("delete", "pods"),
    ] {
        assert!(
            !can(&bed, &sa, verb, resource, None),
            "the operator may {verb} {resource}"
        );
    }

    // Account ownership: owners of acme may back acme up, not another account.
    let user = unique("alice");
    bed.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        &user,
        "--clusterrole=rewind-editor",
        &format!("--user={user}"),
    ]);
    let backup = |account: &str| {
        let name = unique("owned");
        let yaml = format!(
            "apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {name}}}\nspec: {{account: {account}}}\n"
        );
        bed.kubectl_with_stdin(
            &[
                "create",
                "-f",
                "-",
                "--dry-run=server",
                "--as",
                &user,
                "--as-group",
                "rewind:owners:acme",
            ],
            Some(yaml.as_bytes()),
        )
    };
    let allowed = bed.wait_until(
        "the policy to admit an owner",
        std::time::Duration::from_secs(30),
        || backup("acme").ok(),
        String::new,
    );
    assert!(allowed.contains("created"), "{allowed}");
    let refused = backup("globex");
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("rewind:owners:globex")),
        "a non-owner is refused by name: {refused:?}"
    );
    bed.kubectl_ok(&["delete", "clusterrolebinding", &user]);
}

#[test]
fn the_grafana_dashboard_ships_in_a_sidecar_configmap_only_when_asked() {
    let bed = Bed::get();
    let chart = repo_root().join("charts/rewind");
    let render = |extra: &[&str]| {
        let mut args = vec![
            "template",
            "rewind",
            chart.to_str().unwrap_or_default(),
            "--namespace",
            "rewind-system",
            "--skip-crds",
            "--kube-version",
            "1.36.0",
        ];
        args.extend_from_slice(extra);
        bed.helm(&args).expect("helm template")
    };
    assert!(!render(&[]).contains("grafana_dashboard"), "off by default");
    let rendered = render(&["--set", "metrics.grafanaDashboard.enabled=true"]);
    let configmap = serde_yaml::Deserializer::from_str(&rendered)
        .filter_map(|doc| serde_json::Value::deserialize(doc).ok())
        .find(|doc| {
            doc["kind"] == "ConfigMap" && doc["metadata"]["name"] == "rewind-grafana-dashboard"
        })
        .expect("the dashboard ConfigMap");
    assert_eq!(configmap["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: serde_json::Value = serde_json::from_str(
        configmap["data"]["rewind.json"]
            .as_str()
            .unwrap_or_default(),
    )
    .expect("the dashboard is JSON");
    let source: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(chart.join("dashboards/rewind.json")).expect("dashboard file"),
    )
    .expect("JSON");
    assert_eq!(shipped, source);
}

#[test]
fn the_chart_runs_one_replica_on_its_read_write_once_repository_volume_and_two_on_an_object_store()
{
    let bed = Bed::get();
    let chart = repo_root().join("charts/rewind");
    let chart = chart.to_string_lossy();
    let replicas = |extra: &[&str]| {
        let mut args = vec![
            "template",
            "rewind",
            &chart,
            "--namespace",
            "rewind-system",
            "--kube-version",
            "1.36.0",
            "--show-only",
            "templates/deployment.yaml",
        ];
        args.extend_from_slice(extra);
        let rendered = bed.helm(&args).expect("helm template");
        rendered
            .lines()
            .find_map(|line| line.trim().strip_prefix("replicas: "))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no replicas in {rendered}"))
    };
    // Two pods cannot share the default file:// repository's ReadWriteOnce volume.
    assert_eq!(replicas(&[]), "1");
    assert_eq!(
        replicas(&["--set", "repository.url=s3://backups/rewind"]),
        "2",
        "an object store repository gets a standby"
    );
}

#[test]
fn config_default_is_the_chart_rendered_with_default_values() {
    let bed = Bed::get();
    let chart = repo_root().join("charts/rewind");
    let rendered = bed
        .helm(&[
            "template",
            "rewind",
            &chart.to_string_lossy(),
            "--namespace",
            "rewind-system",
            "--skip-crds",
            "--kube-version",
            "1.36.0",
        ])
        .expect("helm template");
    let committed = std::fs::read_to_string(repo_root().join("config/default/operator.yaml"))
        .unwrap_or_default();
    assert!(
        rendered == committed,
        "config/default/operator.yaml drifted from the chart: run `make manifests` and commit it"
    );
    // The CRDs install both ways: `kubectl apply -f crds/` (the folder holds only CRDs; its
    // kustomization is the extension-less `Kustomization`) and `kubectl apply -k crds/`.
    let crds = repo_root().join("crds");
    for how in ["-f", "-k"] {
        let applied = bed.kubectl_ok(&["apply", how, &crds.to_string_lossy(), "--dry-run=server"]);
        assert_eq!(
            applied.matches("customresourcedefinition").count(),
            3,
            "kubectl apply {how} crds/: {applied}"
        );
    }
    let built = bed.kubectl_ok(&[
        "kustomize",
        &repo_root().join("config/default").to_string_lossy(),
    ]);
    for kind in [
        "CustomResourceDefinition",
        "Deployment",
        "ClusterRole",
        "Namespace",
    ] {
        assert!(
            built.contains(&format!("kind: {kind}")),
            "config/default lacks {kind}"
        );
    }
}

struct Uninstall<'a> {
    bed: &'a Bed,
    namespace: String,
    release: String,
}

impl Drop for Uninstall<'_> {
    fn drop(&mut self) {
        let _ = self
            .bed
            .helm(&["uninstall", &self.release, "-n", &self.namespace, "--wait"]);
    }
}
