//! The Helm chart on the test bed: it installs, the operator's RBAC is least privilege,
//! the account-ownership policy admits owners only, config/default is the chart rendered, and
//! the operator runs from the `rewind` image on the real node where the chart places it.

mod support;

use serde::Deserialize;

use std::path::PathBuf;

use support::real_node::RealNode;
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
    // Each database worker's access: the operator grants a Role allowing exec into one pod in a
    // project, binds it to the worker account, and removes both (docs/volumes.md, "Database
    // workers"). The API server checks on create that the operator holds what it grants.
    let project = bed.namespace("rewind-chart-db");
    let db = project.name.as_str();
    let worker_account = format!("{release}-operator-worker");
    let access = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: rewind-dump-probe, namespace: {db}}}\nrules:\n- {{apiGroups: [\"\"], resources: [pods], resourceNames: [db-0], verbs: [get]}}\n- {{apiGroups: [\"\"], resources: [pods/exec], resourceNames: [db-0], verbs: [get, create]}}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: rewind-dump-probe, namespace: {db}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: rewind-dump-probe}}\nsubjects: [{{kind: ServiceAccount, name: {worker_account}, namespace: {ns}}}]\n"
    );
    bed.kubectl_with_stdin(
        &["create", "-f", "-", "--dry-run=server", "--as", &operator],
        Some(access.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("the operator may grant a worker exec into one pod: {e}"));
    for resource in [
        "roles.rbac.authorization.k8s.io",
        "rolebindings.rbac.authorization.k8s.io",
    ] {
        assert!(
            can(&bed, &sa, "delete", resource, Some(db)),
            "a worker's {resource} goes with it"
        );
    }
    assert_eq!(
        bed.jsonpath(
            &["-n", ns, "serviceaccount", &worker_account],
            "{.metadata.name}"
        )
        .as_deref(),
        Some(worker_account.as_str()),
        "the chart makes the workers' account"
    );
    let worker = format!("system:serviceaccount:{ns}:{worker_account}");
    let worker_sa = ["--as", worker.as_str()];
    for (verb, resource) in [
        ("get", "pods"),
        ("list", "pods"),
        ("create", "pods/exec"),
        ("get", "secrets"),
    ] {
        assert!(
            !can(&bed, &worker_sa, verb, resource, None),
            "the worker account holds nothing of its own, yet may {verb} {resource}"
        );
    }
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

/// The OCI config of `image` as the real node's containerd holds it (`crictl inspecti`).
fn image_config(bed: &Bed, image: &str) -> serde_json::Value {
    let crictl = format!("{}/crictl", bed.var("TESTBED_BIN").unwrap_or("/usr/bin"));
    let endpoint = format!(
        "unix://{}",
        bed.var("CONTAINERD_ADDRESS").unwrap_or_default()
    );
    let output = std::process::Command::new(&crictl)
        .args(["--runtime-endpoint", &endpoint, "inspecti", image])
        .output()
        .unwrap_or_else(|e| panic!("running {crictl}: {e}"));
    let inspected: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "crictl inspecti {image}: {e}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    inspected["info"]["imageSpec"]["config"].clone()
}

/// A helm post-renderer (kustomize) for what only the bed needs: it has no kube-proxy, and its
/// API server's certificate names `kubernetes.default.svc` but not the address pods reach it at,
/// so the operator's pod resolves that name to `api_ip` (hostAliases) and is told the port.
fn bed_api_post_renderer(dir: &std::path::Path, api_ip: &str, api_port: &str) -> PathBuf {
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!(
            "resources: [all.yaml]\npatches:\n- target: {{kind: Deployment}}\n  patch: |-\n    - {{op: add, path: /spec/template/spec/hostAliases, value: [{{ip: \"{api_ip}\", hostnames: [kubernetes.default.svc]}}]}}\n    - {{op: add, path: /spec/template/spec/containers/0/env/-, value: {{name: KUBERNETES_SERVICE_HOST, value: kubernetes.default.svc}}}}\n    - {{op: add, path: /spec/template/spec/containers/0/env/-, value: {{name: KUBERNETES_SERVICE_PORT, value: \"{api_port}\"}}}}\n"
        ),
    )
    .expect("kustomization");
    let script = dir.join("post-render");
    std::fs::write(
        &script,
        "#!/bin/sh\nset -e\ncd \"$(dirname \"$0\")\"\ncat >all.yaml\nexec \"${KUBECTL:-kubectl}\" kustomize .\n",
    )
    .expect("post-renderer");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("executable");
    script
}

#[test]
fn the_chart_runs_the_operator_from_the_rewind_image_on_the_node_it_is_placed_on_and_uninstalls_clean()
 {
    let bed = Bed::get();
    let Some(node) = RealNode::of(&bed) else {
        return;
    };
    let (Some(endpoint), Some(bucket)) = (
        bed.require("S3_ENDPOINT", "an S3 repository pods can reach"),
        bed.require("S3_BUCKET", "an S3 repository pods can reach"),
    ) else {
        return;
    };
    let image = support::real_node::rewind_image(&bed);
    let (repository, tag) = image.rsplit_once(':').expect("image name:tag");
    // The image is the one the Dockerfile describes: its entrypoint, default command and user.
    let config = image_config(&bed, &image);
    assert_eq!(
        (&config["Entrypoint"], &config["Cmd"], &config["User"]),
        (
            &serde_json::json!(["/usr/local/bin/rewind"]),
            &serde_json::json!(["run"]),
            &serde_json::json!("65532:65532")
        ),
        "{config}"
    );
    let release_ns = bed.namespace("rewind-placed");
    let ns = release_ns.name.as_str();
    bed.kubectl_ok(&[
        "-n",
        ns,
        "create",
        "secret",
        "generic",
        "rewind-repository-key",
        &format!("--from-literal=key={}", support::operator::new_key_hex()),
    ]);
    let (label_key, label_value) = node.label.split_once('=').expect("label key=value");
    let var = |key: &str| bed.var(key).unwrap_or_default().to_string();
    // One replica, no cluster-wide extras: the user roles have fixed names (the install test
    // above owns them) and the ownership policies are covered there.
    let values = format!(
        r#"image: {{repository: "{repository}", tag: "{tag}", pullPolicy: Never}}
replicas: 1
nodeSelector: {{"{label_key}": "{label_value}"}}
tolerations: [{{key: "{taint}", operator: Exists, effect: NoSchedule}}]
userRoles: {{enabled: false}}
accountOwnership: {{enabled: false}}
repository:
  url: "s3://{bucket}/{prefix}"
  keySecret: rewind-repository-key
  persistence: {{enabled: false}}
  env:
    - {{name: AWS_ENDPOINT, value: "{endpoint}"}}
    - {{name: AWS_ALLOW_HTTP, value: "true"}}
    - {{name: AWS_ACCESS_KEY_ID, value: "{key_id}"}}
    - {{name: AWS_SECRET_ACCESS_KEY, value: "{secret}"}}
    - {{name: AWS_REGION, value: "{region}"}}
"#,
        taint = node.taint,
        prefix = unique("placed"),
        key_id = var("AWS_ACCESS_KEY_ID"),
        secret = var("AWS_SECRET_ACCESS_KEY"),
        region = var("AWS_REGION"),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("values.yaml"), &values).expect("values");
    let api_ip = bed
        .jsonpath(
            &["node", &node.name],
            r#"{.status.addresses[?(@.type=="InternalIP")].address}"#,
        )
        .expect("the real node's InternalIP (the host's address on the pods' bridge)");
    let server = bed.kubectl_ok(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let api_port = server
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let post_renderer = bed_api_post_renderer(dir.path(), &api_ip, &api_port);
    let chart = repo_root().join("charts/rewind");
    let release = unique("placed");
    bed.helm(&[
        "install",
        &release,
        &chart.to_string_lossy(),
        "-n",
        ns,
        "-f",
        &dir.path().join("values.yaml").to_string_lossy(),
        "--post-renderer",
        &post_renderer.to_string_lossy(),
    ])
    .unwrap_or_else(|e| panic!("helm install: {e}\n{values}"));
    let mut uninstall = Some(Uninstall {
        bed: &bed,
        namespace: ns.to_string(),
        release: release.clone(),
    });
    let installed = bed
        .helm(&["get", "manifest", &release, "-n", ns])
        .expect("helm get manifest");

    let selector = format!("app.kubernetes.io/instance={release}");
    let pod_field = |path: &str| {
        bed.jsonpath(
            &["-n", ns, "pods", "-l", &selector],
            &format!("{{.items[0].{path}}}"),
        )
    };
    let logs = || {
        bed.kubectl(&["-n", ns, "logs", "-l", &selector, "--tail", "30"])
            .unwrap_or_else(|e| e)
    };
    bed.wait_until(
        "the operator's pod to be Ready",
        std::time::Duration::from_secs(60),
        || {
            (pod_field(r#"status.conditions[?(@.type=="Ready")].status"#).as_deref()
                == Some("True"))
            .then_some(())
        },
        || format!("{}\n--- operator log ---\n{}", bed.describe(ns), logs()),
    );
    let pod = pod_field("metadata.name").expect("the operator's pod");
    assert_eq!(
        pod_field("spec.nodeName"),
        Some(node.name.clone()),
        "placed on the real node"
    );
    assert_eq!(pod_field("spec.containers[0].image"), Some(image.clone()));
    // Its /readyz, through the API server's proxy to the pod's port.
    let ready = bed.kubectl_ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{ns}/pods/{pod}:8080/proxy/readyz"),
    ]);
    assert_eq!(ready.trim(), "ready");
    let log = logs();
    assert!(
        log.contains("serving /healthz, /readyz and /metrics") && log.contains("became the leader"),
        "the operator started and leads: {log}"
    );

    // Uninstalled, every object the release made is gone and its pod with it (CRDs stay: helm
    // never deletes a chart's CRDs).
    drop(uninstall.take());
    let left: Vec<String> = serde_yaml::Deserializer::from_str(&installed)
        .filter_map(|doc| serde_json::Value::deserialize(doc).ok())
        .filter(|doc| doc["kind"].is_string())
        .filter_map(|doc| {
            let (kind, name) = (doc["kind"].as_str()?, doc["metadata"]["name"].as_str()?);
            let mut args = vec!["get", kind, name, "--ignore-not-found", "-o", "name"];
            if let Some(namespace) = doc["metadata"]["namespace"].as_str() {
                args.extend(["-n", namespace]);
            }
            let found = bed.kubectl(&args).unwrap_or_else(|e| e);
            (!found.trim().is_empty()).then(|| format!("{kind}/{name}: {found}"))
        })
        .collect();
    assert!(left.is_empty(), "left after helm uninstall: {left:?}");
    bed.wait_until(
        "the operator's pod to be gone",
        std::time::Duration::from_secs(30),
        || pod_field("metadata.name").is_none().then_some(()),
        || bed.describe(ns),
    );
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
