//! `kubectl rewind` end to end: the real kubectl finds the plugin on PATH (the `rewind` binary
//! installed as `kubectl-rewind`) and drives a real operator on the test bed.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::operator::Operator;
use support::{Bed, unique};

/// `kubectl rewind ARGS` with `stdin`; returns (success, stdout, stderr).
fn kubectl_rewind(
    bed: &Bed,
    plugin_dir: &std::path::Path,
    args: &[&str],
    stdin: &str,
) -> (bool, String, String) {
    kubectl_with_plugins(bed, plugin_dir, &[&["rewind"], args].concat(), stdin)
}

/// `kubectl ARGS` with the plugins of `plugin_dir` on PATH; returns (success, stdout, stderr).
fn kubectl_with_plugins(
    bed: &Bed,
    plugin_dir: &std::path::Path,
    args: &[&str],
    stdin: &str,
) -> (bool, String, String) {
    let path = format!(
        "{}:{}",
        plugin_dir.display(),
        bed.var("PATH")
            .map(str::to_string)
            .or_else(|| std::env::var("PATH").ok())
            .unwrap_or_default()
    );
    let mut child = Command::new(bed.var("KUBECTL").unwrap_or("kubectl"))
        .envs(bed.envs())
        .env("PATH", path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let Some(mut pipe) = child.stdin.take() {
        let _ = pipe.write_all(stdin.as_bytes());
    }
    let output = child.wait_with_output().expect("kubectl finished");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn kubectl_rewind_takes_lists_logs_and_restores_only_after_the_user_understands() {
    let bed = Bed::get();
    let operator = Operator::shared(&bed, &[]);
    let plugin_dir = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_rewind"),
        plugin_dir.path().join("kubectl-rewind"),
    )
    .expect("install the plugin");
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_rewind"),
        plugin_dir.path().join("kubectl_complete-rewind"),
    )
    .expect("install the plugin's completion");
    let dir = plugin_dir.path();
    let account = unique("plugin");
    let project = bed.project("plugin", &account);
    let ns = project.name.clone();
    bed.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {ns}}}\ndata: {{currency: EUR}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: payment-key, namespace: {ns}, labels: {{rewind.dev/token: 'true'}}}}\nstringData: {{key: sk_live_0123456789abcdef}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: tls-not-a-token, namespace: {ns}}}\nstringData: {{crt: plain}}\n"
    ));
    let token_before = bed.kubectl_ok(&[
        "-n",
        &ns,
        "get",
        "secret",
        "payment-key",
        "-o",
        "jsonpath={.data.key}",
    ]);

    let (ok, out, err) = kubectl_rewind(
        &bed,
        dir,
        &[
            "backup",
            &account,
            "--notes",
            "before the release",
            "--wait",
        ],
        "",
    );
    assert!(ok, "backup failed: {err}\n{}", operator.log_tail());
    let backup = out.lines().next().unwrap_or_default().to_string();
    assert!(backup.starts_with(&format!("{account}-now-")), "{out}");
    assert!(out.contains(&format!("{backup}: Completed")), "{out}");
    assert!(
        err.lines()
            .any(|line| line.contains(" items, ") && line.contains(" read")),
        "--wait shows progress on stderr: {err}"
    );

    // Shell completion through kubectl's own plugin completion: commands, then backup names.
    let (ok, offered, err) = kubectl_with_plugins(&bed, dir, &["__complete", "rewind", "desc"], "");
    assert!(
        ok && offered.lines().any(|l| l == "describe"),
        "{offered}{err}"
    );
    let prefix = &backup[..backup.len() - 2];
    let (ok, offered, err) =
        kubectl_with_plugins(&bed, dir, &["__complete", "rewind", "describe", prefix], "");
    assert!(ok && offered.lines().any(|l| l == backup), "{offered}{err}");

    let (ok, table, err) = kubectl_rewind(&bed, dir, &["list", &account], "");
    assert!(ok, "{err}");
    let row = table
        .lines()
        .find(|line| line.starts_with(&backup))
        .unwrap_or_else(|| panic!("{backup} missing from:\n{table}"));
    assert!(
        row.contains("Completed") && row.contains(" UTC") && row.ends_with("before the release"),
        "{table}"
    );

    let (ok, described, err) = kubectl_rewind(&bed, dir, &["describe", &backup], "");
    assert!(ok, "{err}");
    let project_row = described
        .lines()
        .find(|line| line.trim_start().starts_with(&ns))
        .unwrap_or_else(|| panic!("{ns} missing from:\n{described}"));
    assert!(
        described.contains(&format!("Account:          {account}"))
            && described.contains("OBJECTS")
            && project_row
                .split_whitespace()
                .nth(1)
                .is_some_and(|n| n != "0"),
        "{described}"
    );
    // Objects per kind, and the tokens a restore would regenerate: names only, never values.
    let kinds: Vec<Vec<&str>> = described
        .split("Objects per kind:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no objects per kind in:\n{described}"))
        .lines()
        .take_while(|line| !line.is_empty())
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert!(
        kinds.iter().any(|row| row.ends_with(&["ConfigMap", "1"])),
        "{described}"
    );
    assert!(
        kinds.iter().any(|row| row.ends_with(&["Secret", "2"])),
        "{described}"
    );
    let tokens = described
        .split("Tokens a restore regenerates (new values, names only):\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no tokens in:\n{described}"));
    let token_row = tokens
        .lines()
        .find(|line| line.trim_start().starts_with(&ns))
        .unwrap_or_else(|| panic!("{ns} has no token row in:\n{described}"));
    assert_eq!(
        token_row.split_whitespace().collect::<Vec<_>>(),
        [ns.as_str(), "1", "payment-key"],
        "{described}"
    );
    assert!(
        !described.contains("sk_live") && !described.contains("tls-not-a-token"),
        "{described}"
    );

    let (ok, json, err) = kubectl_rewind(&bed, dir, &["list", &account, "-o", "json"], "");
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&json).expect("list -o json is JSON");
    assert_eq!(listed[0]["metadata"]["name"], backup.as_str(), "{json}");
    let (ok, json, err) = kubectl_rewind(&bed, dir, &["describe", &backup, "-o", "json"], "");
    assert!(ok, "{err}");
    let object: serde_json::Value = serde_json::from_str(&json).expect("describe -o json is JSON");
    let summary = &object["status"]["projects"][0];
    assert_eq!(object["metadata"]["name"], backup.as_str(), "{json}");
    assert_eq!(summary["kinds"]["ConfigMap"], 1, "{json}");
    assert_eq!(
        summary["tokens"],
        serde_json::json!(["payment-key"]),
        "{json}"
    );
    assert_eq!(summary["tokenCount"], 1, "{json}");
    let (ok, json, err) = kubectl_rewind(&bed, dir, &["log", &backup, "-o", "json"], "");
    assert!(ok, "{err}");
    let entries: serde_json::Value = serde_json::from_str(&json).expect("log -o json is JSON");
    assert!(
        entries
            .as_array()
            .is_some_and(|e| e.len() >= 2 && e.iter().all(|e| e["message"].is_string())),
        "{json}"
    );
    // A command that cannot print objects refuses -o instead of ignoring it.
    let before = bed.kubectl_ok(&["get", "accountbackups", "-o", "name"]);
    let (ok, _, err) = kubectl_rewind(&bed, dir, &["backup", &account, "-o", "json"], "");
    assert!(!ok && err.contains("cannot print -o json"), "{err}");
    assert_eq!(
        bed.kubectl_ok(&["get", "accountbackups", "-o", "name"]),
        before,
        "nothing created"
    );

    // Notes a tenant wrote with a terminal escape sequence are printed harmlessly.
    let (ok, out, err) = kubectl_rewind(
        &bed,
        dir,
        &[
            "backup",
            &account,
            "--notes",
            "clear\x1b[2J\x1b]0;owned\x07",
            "--wait",
        ],
        "",
    );
    assert!(ok, "{err}");
    let escaped = out.lines().next().unwrap_or_default().to_string();
    let (ok, table, err) = kubectl_rewind(&bed, dir, &["list", &account], "");
    assert!(ok, "{err}");
    assert!(
        !table.contains('\x1b') && !table.contains('\x07'),
        "{table:?}"
    );
    assert!(table.contains("clear?[2J?]0;owned?"), "{table}\n{out}");
    for command in ["describe", "log"] {
        let (ok, text, err) = kubectl_rewind(&bed, dir, &[command, &escaped], "");
        assert!(ok, "{command}: {err}");
        assert!(
            !text.contains('\x1b') && !text.contains('\x07'),
            "{command}: {text:?}"
        );
        if command == "describe" {
            assert!(text.contains("clear?[2J?]0;owned?"), "{text}");
        }
    }

    let (ok, log, err) = kubectl_rewind(&bed, dir, &["log", &backup], "");
    assert!(ok, "{err}");
    assert!(log.lines().count() >= 2, "{log}");
    assert!(
        !log.contains('\x1b'),
        "no colour when stdout is not a terminal: {log}"
    );

    let target = format!("{ns}-back");
    let to = format!("{ns}={target}");
    let before = bed.kubectl_ok(&["get", "projectrestores", "-o", "name"]);
    let (ok, _, err) = kubectl_rewind(&bed, dir, &["restore", &backup, "--to", &to], "yes\n");
    assert!(!ok, "a restore without the exact words must be refused");
    assert!(
        err.contains("I understand") && err.contains(&format!("{ns}  ->  {target}")),
        "{err}"
    );
    assert!(err.contains("not confirmed: nothing was created"), "{err}");
    assert_eq!(
        bed.kubectl_ok(&["get", "projectrestores", "-o", "name"]),
        before
    );

    // --wait draws the progress (one line per change in a pipe) and prints the outcome.
    let (ok, out, err) = kubectl_rewind(
        &bed,
        dir,
        &["restore", &backup, "--to", &to, "--wait"],
        "I understand\n",
    );
    assert!(ok, "{err}\n{}", operator.log_tail());
    let restore = out.lines().next().unwrap_or_default().trim().to_string();
    assert!(restore.starts_with(&format!("{backup}-restore-")), "{out}");
    assert!(
        out.contains(&format!("{restore}: Completed")),
        "--wait prints the outcome: {out}"
    );
    assert!(
        err.lines()
            .any(|line| line.contains(" items, ") && line.contains(" read")),
        "--wait shows the progress: {err}"
    );
    let phase = bed
        .jsonpath(&["projectrestore", &restore], "{.status.phase}")
        .unwrap_or_default();
    let _ = bed.kubectl(&["delete", "namespace", &target, "--wait=false"]);
    assert_eq!(phase, "Completed");
    let (ok, restores, err) = kubectl_rewind(&bed, dir, &["restores", &account], "");
    assert!(ok, "{err}");
    let row = restores
        .lines()
        .find(|line| line.starts_with(&restore))
        .unwrap_or_else(|| panic!("{restore} missing from:\n{restores}"));
    assert!(
        row.contains(&backup)
            && row.contains("Completed")
            && row.contains(&format!("{ns}->{target}")),
        "{restores}"
    );
    let (ok, yaml, err) = kubectl_rewind(&bed, dir, &["restores", &account, "-o", "yaml"], "");
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_yaml::from_str(&yaml).expect("restores -o yaml is YAML");
    assert!(
        listed.as_array().is_some_and(|items| items
            .iter()
            .any(|r| r["metadata"]["name"] == restore.as_str()
                && r["status"]["phase"] == "Completed")),
        "{yaml}"
    );
    assert_eq!(
        bed.jsonpath(
            &["-n", &target, "configmap", "settings"],
            "{.data.currency}"
        )
        .as_deref(),
        Some("EUR")
    );
    // The token describe named came back with a new value.
    let token_after = bed.jsonpath(&["-n", &target, "secret", "payment-key"], "{.data.key}");
    assert!(
        token_after
            .as_deref()
            .is_some_and(|after| after != token_before),
        "{token_before} -> {token_after:?}"
    );
    bed.kubectl_ok(&["delete", "projectrestore", &restore, "--timeout=90s"]);
    bed.kubectl_ok(&[
        "delete",
        "accountbackup",
        &backup,
        &escaped,
        "--timeout=90s",
    ]);
}
