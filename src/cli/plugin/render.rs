//! What `kubectl rewind` prints: the backup table, the activity log (errors in red) and the
//! restore confirmation. Pure: objects in, text out.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{AccountBackup, ActivityEntry, ActivityLevel};

/// The words a user must type before a restore is created.
pub const CONFIRMATION: &str = "I understand";

/// Whether `answer` (one line the user typed) confirms the restore.
pub fn confirms(answer: &str) -> bool {
    answer.trim() == CONFIRMATION
}

/// `text` with every control character (C0, DEL, C1 — terminal escape sequences among them)
/// shown as `?`, on one line: names, notes and messages are written by tenants, and a tenant's
/// text must not move the cursor, recolour or retitle another user's terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn when(time: Option<&Time>) -> String {
    time.map(|t| t.0.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

/// The backups as a table, newest first: name, account, phase, when taken, size, notes.
pub fn backup_table(backups: &[AccountBackup]) -> String {
    let mut sorted: Vec<&AccountBackup> = backups.iter().collect();
    let taken = |b: &AccountBackup| {
        b.status
            .as_ref()
            .and_then(|s| s.completed_at.clone().or_else(|| s.started_at.clone()))
            .or_else(|| b.metadata.creation_timestamp.clone())
    };
    sorted.sort_by_key(|b| std::cmp::Reverse(taken(b).map(|t| t.0)));
    let mut rows = vec![[
        "NAME".to_string(),
        "ACCOUNT".into(),
        "PHASE".into(),
        "TAKEN".into(),
        "SIZE".into(),
        "ADDED".into(),
        "NOTES".into(),
    ]];
    for backup in sorted {
        let status = backup.status.clone().unwrap_or_default();
        rows.push([
            backup.metadata.name.clone().unwrap_or_default(),
            backup.spec.account.clone(),
            status
                .phase
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "Pending".into()),
            when(taken(backup).as_ref()),
            status.logical_size.map_or_else(|| "-".into(), |s| s.human),
            status.size.map_or_else(|| "-".into(), |s| s.human),
            backup.spec.notes.clone().unwrap_or_default(),
        ]);
    }
    align(&rows)
}

fn align<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{:width$}", printable(cell)))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A volume's size as the snapshot or PVC states it: a plain byte count (what CSI drivers
/// report as `restoreSize`) in the units of the other sizes, a quantity such as `1Gi` as it is.
fn volume_size(quantity: Option<&str>) -> String {
    match quantity {
        None => "-".into(),
        Some(text) => text
            .parse::<u64>()
            .map(bytes)
            .unwrap_or_else(|_| text.to_string()),
    }
}

fn bytes(n: u64) -> String {
    crate::api::ByteSize::new(n).human
}

/// What a backup holds, as an admin reads it before a restore (pure): the backup's facts, each
/// project with its objects, volumes, dumps and failures, then the volumes, the dumps, what was
/// left out and what failed, each with its reason.
pub fn backup_description(backup: &AccountBackup) -> String {
    let status = backup.status.clone().unwrap_or_default();
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        out.push_str(&format!("{label:<18}{}\n", printable(&value)));
    };
    line("Name:", backup.metadata.name.clone().unwrap_or_default());
    line("Account:", backup.spec.account.clone());
    line(
        "Phase:",
        status
            .phase
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "Pending".into()),
    );
    line(
        "Notes:",
        backup.spec.notes.clone().unwrap_or_else(|| "-".into()),
    );
    line(
        "Requested by:",
        status.requested_by.clone().unwrap_or_else(|| "-".into()),
    );
    line("Started:", when(status.started_at.as_ref()));
    line("Completed:", when(status.completed_at.as_ref()));
    line("Restorable until:", when(status.restorable_until.as_ref()));
    line(
        "Size:",
        format!(
            "{} held, {} added to the repository",
            status
                .logical_size
                .as_ref()
                .map_or_else(|| "-".into(), |s| s.human.clone()),
            status
                .size
                .as_ref()
                .map_or_else(|| "-".into(), |s| s.human.clone())
        ),
    );
    line(
        "Snapshot:",
        status
            .repository_snapshot
            .clone()
            .unwrap_or_else(|| "-".into()),
    );
    let mut projects = vec![[
        "PROJECT".to_string(),
        "OBJECTS".into(),
        "VOLUMES".into(),
        "DATABASES".into(),
        "BYTES".into(),
        "FAILED".into(),
    ]];
    for p in &status.projects {
        projects.push([
            p.name.clone(),
            p.resources.to_string(),
            p.volumes.to_string(),
            p.databases.to_string(),
            bytes(p.bytes),
            p.failed.to_string(),
        ]);
    }
    out.push_str("\nProjects:\n");
    out.push_str(&indent(&align(&projects)));
    out.push_str(&kinds_and_tokens(&status.projects));
    if !status.volume_snapshots.is_empty() {
        let mut rows = vec![[
            "PROJECT".to_string(),
            "PVC".into(),
            "SIZE".into(),
            "CLASS".into(),
            "READY".into(),
        ]];
        for v in &status.volume_snapshots {
            rows.push([
                v.project.clone(),
                v.pvc.clone(),
                volume_size(v.restore_size.as_deref().or(v.pvc_size.as_deref())),
                v.storage_class.clone().unwrap_or_else(|| "-".into()),
                v.ready.to_string(),
            ]);
        }
        out.push_str("\nVolumes:\n");
        out.push_str(&indent(&align(&rows)));
    }
    if !status.database_dumps.is_empty() {
        let mut rows = vec![[
            "PROJECT".to_string(),
            "POD".into(),
            "ENGINE".into(),
            "SIZE".into(),
        ]];
        for d in &status.database_dumps {
            rows.push([
                d.project.clone(),
                d.pod.clone(),
                d.engine.clone(),
                bytes(d.bytes),
            ]);
        }
        out.push_str("\nDatabase dumps:\n");
        out.push_str(&indent(&align(&rows)));
    }
    for (title, items) in [("Left out", &status.excluded), ("Failed", &status.failed)] {
        if items.is_empty() {
            continue;
        }
        let mut rows = vec![[
            "PROJECT".to_string(),
            "KIND".into(),
            "NAME".into(),
            "WHY".into(),
        ]];
        for item in items {
            rows.push([
                item.project.clone(),
                item.kind.clone(),
                item.name.clone(),
                item.reason.clone(),
            ]);
        }
        out.push_str(&format!("\n{title}:\n"));
        out.push_str(&indent(&align(&rows)));
    }
    out
}

/// Each project's objects per kind, then the resource tokens a restore would give new values
/// (names only, never values); sections without rows are left out.
fn kinds_and_tokens(projects: &[crate::api::ProjectSummary]) -> String {
    let mut out = String::new();
    let mut kinds = vec![["PROJECT".to_string(), "KIND".into(), "OBJECTS".into()]];
    for p in projects {
        for (at, (kind, count)) in p.kinds.iter().enumerate() {
            let kind = if kind == crate::api::ProjectSummary::OTHER_KINDS {
                "(other kinds)"
            } else {
                kind
            };
            let project = if at == 0 {
                p.name.clone()
            } else {
                String::new()
            };
            kinds.push([project, kind.to_string(), count.to_string()]);
        }
    }
    if kinds.len() > 1 {
        out.push_str("\nObjects per kind:\n");
        out.push_str(&indent(&align(&kinds)));
    }
    let mut tokens = vec![["PROJECT".to_string(), "TOKENS".into(), "NAMES".into()]];
    for p in projects.iter().filter(|p| p.token_count > 0) {
        let mut names = p.tokens.join(", ");
        let unnamed = p.token_count.saturating_sub(p.tokens.len() as u64);
        if unnamed > 0 {
            let and = if names.is_empty() { "" } else { " and " };
            names.push_str(&format!("{and}{unnamed} more not listed here"));
        }
        tokens.push([p.name.clone(), p.token_count.to_string(), names]);
    }
    if tokens.len() > 1 {
        out.push_str("\nTokens a restore regenerates (new values, names only):\n");
        out.push_str(&indent(&align(&tokens)));
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// The restores as a table, newest first: name, account, backup, phase, targets, age (pure).
pub fn restore_table(restores: &[crate::api::ProjectRestore]) -> String {
    let mut sorted: Vec<&crate::api::ProjectRestore> = restores.iter().collect();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.metadata.creation_timestamp.as_ref().map(|t| t.0)));
    let mut rows = vec![[
        "NAME".to_string(),
        "ACCOUNT".into(),
        "BACKUP".into(),
        "PHASE".into(),
        "TARGETS".into(),
        "CREATED".into(),
    ]];
    for restore in sorted {
        let status = restore.status.clone().unwrap_or_default();
        let targets = if status.target_namespaces.is_empty() {
            &restore.spec.target_namespaces
        } else {
            &status.target_namespaces
        };
        rows.push([
            restore.metadata.name.clone().unwrap_or_default(),
            restore.spec.account.clone(),
            restore.spec.backup.clone(),
            status
                .phase
                .map(|p| format!("{p:?}"))
                .unwrap_or_else(|| "Pending".into()),
            targets
                .iter()
                .map(|(from, to)| format!("{from}->{to}"))
                .collect::<Vec<_>>()
                .join(","),
            when(restore.metadata.creation_timestamp.as_ref()),
        ]);
    }
    align(&rows)
}

/// One progress line of a running operation (pure): phase, a bar of items done, bytes handled,
/// and the time left at the rate so far once the operator has estimated it.
pub fn progress_line(
    phase: Option<&str>,
    progress: Option<&crate::api::Progress>,
    now: jiff::Timestamp,
) -> String {
    const WIDTH: u64 = 24;
    let phase = phase.unwrap_or("Pending");
    let Some(progress) = progress.filter(|p| p.items_total > 0) else {
        return phase.to_string();
    };
    let done = progress.items_done.min(progress.items_total);
    let filled = (done * WIDTH / progress.items_total) as usize;
    let bytes_done = match progress.bytes_total {
        0 => bytes(progress.bytes_done),
        total => format!("{}/{}", bytes(progress.bytes_done), bytes(total)),
    };
    let left = progress
        .estimated_completion_time
        .as_ref()
        .map(|at| at.0.duration_since(now).as_secs())
        .filter(|seconds| *seconds > 0)
        .map(|seconds| format!(", about {} left", duration(seconds)))
        .unwrap_or_default();
    format!(
        "{phase:<9} [{}{}] {done}/{} items, {bytes_done} read{left}",
        "#".repeat(filled),
        ".".repeat(WIDTH as usize - filled),
        progress.items_total,
    )
}

/// A number of seconds for people: `45s`, `3m20s`, `2h05m`.
fn duration(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The activity log, one entry per line; with `color`, errors in red and warnings in yellow.
pub fn activity_log(entries: &[ActivityEntry], color: bool) -> String {
    let mut out = String::new();
    for entry in entries {
        let (label, paint) = match entry.level {
            ActivityLevel::Info => ("info   ", ""),
            ActivityLevel::Warning => ("warning", "\x1b[33m"),
            ActivityLevel::Error => ("error  ", "\x1b[31m"),
        };
        let line = format!(
            "{}  {label}  {}",
            entry.time.0.strftime("%Y-%m-%d %H:%M:%S"),
            printable(&entry.message)
        );
        if color && !paint.is_empty() {
            out.push_str(&format!("{paint}{line}\x1b[0m\n"));
        } else {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// What a restore will do, ending with the question.
pub fn restore_prompt(
    backup: &AccountBackup,
    projects: &[String],
    targets: &[(String, String)],
) -> String {
    let status = backup.status.clone().unwrap_or_default();
    let taken = when(status.completed_at.as_ref());
    let chosen = if projects.is_empty() {
        status
            .projects
            .iter()
            .map(|p| p.name.clone())
            .collect::<Vec<_>>()
    } else {
        projects.to_vec()
    };
    let mut text = format!(
        "Restore from AccountBackup {} (account {}, taken {taken}):\n",
        printable(&backup.metadata.name.clone().unwrap_or_default()),
        printable(&backup.spec.account)
    );
    for project in &chosen {
        let target = targets
            .iter()
            .find(|(from, _)| from == project)
            .map_or("a new namespace the operator names", |(_, to)| to.as_str());
        text.push_str(&format!(
            "  {}  ->  {}\n",
            printable(project),
            printable(target)
        ));
    }
    text.push_str(
        "Each project comes back as a NEW namespace, with fresh tokens; the existing projects are not touched.\n",
    );
    text.push_str(&format!("Type `{CONFIRMATION}` to create the restore: "));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AccountBackupSpec, AccountBackupStatus, BackupPhase, ByteSize};
    use jiff::Timestamp;

    fn backup(name: &str, completed: i64, notes: &str) -> AccountBackup {
        let mut backup = AccountBackup::new(
            name,
            serde_json::from_value::<AccountBackupSpec>(
                serde_json::json!({"account": "acme", "notes": notes}),
            )
            .expect("spec"),
        );
        backup.status = Some(AccountBackupStatus {
            phase: Some(BackupPhase::Completed),
            completed_at: Some(Time(Timestamp::from_second(completed).expect("time"))),
            size: Some(ByteSize {
                bytes: 1,
                human: "1.4 MiB".into(),
            }),
            ..Default::default()
        });
        backup
    }

    #[test]
    fn the_backup_table_lists_newest_first_with_date_size_and_notes() {
        let table = backup_table(&[
            backup("monday", 1_763_942_400, "before the release"),
            backup("tuesday", 1_764_028_800, ""),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NAME"));
        assert!(lines[1].starts_with("tuesday"), "{table}");
        assert!(lines[2].contains("2025-11-24 00:00 UTC"), "{table}");
        assert!(lines[2].contains("1.4 MiB"), "{table}");
        assert!(lines[2].ends_with("before the release"), "{table}");
    }

    #[test]
    fn errors_are_red_only_when_color_is_asked_for() {
        let entries = vec![
            ActivityEntry {
                time: Time(Timestamp::UNIX_EPOCH),
                level: ActivityLevel::Info,
                message: "started".into(),
            },
            ActivityEntry {
                time: Time(Timestamp::UNIX_EPOCH),
                level: ActivityLevel::Error,
                message: "dump of db-0 failed".into(),
            },
        ];
        let colored = activity_log(&entries, true);
        assert!(
            colored.contains("\x1b[31m1970-01-01 00:00:00  error    dump of db-0 failed\x1b[0m")
        );
        assert!(!colored.lines().next().unwrap_or_default().contains('\x1b'));
        assert!(!activity_log(&entries, false).contains('\x1b'));
    }

    #[test]
    fn terminal_escape_sequences_a_tenant_wrote_are_never_printed() {
        let notes = "before upgrade\x1b]0;pwned\x07\x1b[2J\u{9b}31m\nline two";
        let table = backup_table(&[backup("nightly", 100, notes)]);
        assert!(
            !table.chars().any(|c| c.is_control() && c != '\n'),
            "{table:?}"
        );
        assert_eq!(
            table.lines().count(),
            2,
            "one header and one row: {table:?}"
        );
        let entries = [ActivityEntry {
            time: Time(Timestamp::from_second(100).expect("time")),
            level: ActivityLevel::Error,
            message: "failed \x1b[8mhidden".into(),
        }];
        let log = activity_log(&entries, true);
        assert!(log.contains("failed ?[8mhidden"), "{log:?}");
        assert_eq!(
            log.matches('\x1b').count(),
            2,
            "only our own colour codes: {log:?}"
        );
    }

    #[test]
    fn a_description_lists_projects_volumes_dumps_and_failures_with_reasons() {
        use crate::api::{DatabaseDumpRecord, ItemOutcome, ProjectSummary, VolumeSnapshotRecord};
        let mut b = backup("nightly", 100, "before \x1b[2Jthe release");
        let status = b.status.as_mut().expect("status");
        status.projects = vec![ProjectSummary {
            name: "shop".into(),
            resources: 12,
            volumes: 1,
            databases: 1,
            bytes: 2048,
            ..Default::default()
        }];
        status.volume_snapshots = vec![VolumeSnapshotRecord {
            project: "shop".into(),
            pvc: "uploads".into(),
            driver: "d".into(),
            restore_size: Some("1Gi".into()),
            ready: true,
            ..Default::default()
        }];
        status.database_dumps = vec![DatabaseDumpRecord {
            project: "shop".into(),
            pod: "db-0".into(),
            engine: "postgres".into(),
            bytes: 4096,
            ..Default::default()
        }];
        status.failed = vec![ItemOutcome {
            project: "shop".into(),
            kind: "Widget".into(),
            name: "w".into(),
            reason: "the API refused the list".into(),
        }];
        let text = backup_description(&b);
        for expected in [
            "shop",
            "12",
            "uploads",
            "1Gi",
            "db-0",
            "postgres",
            "Failed:",
            "the API refused the list",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
        assert!(!text.contains('\x1b'), "{text:?}");
    }

    #[test]
    fn a_description_shows_objects_per_kind_and_the_token_names_a_restore_regenerates() {
        use crate::api::ProjectSummary;
        let mut b = backup("nightly", 100, "");
        let mut shop = ProjectSummary {
            name: "shop".into(),
            ..Default::default()
        };
        for kind in ["ConfigMap", "ConfigMap", "Deployment.apps", "Secret"] {
            shop.count_object(kind);
        }
        shop.count_token("stripe-key");
        shop.count_token("mail\x1b[2J-key");
        let mut big = ProjectSummary {
            name: "big".into(),
            ..Default::default()
        };
        big.count_object("Secret");
        big.count_token("first");
        big.token_count = 250;
        let quiet = ProjectSummary {
            name: "quiet".into(),
            ..Default::default()
        };
        b.status.as_mut().expect("status").projects = vec![shop, big, quiet];
        let text = backup_description(&b);
        let kinds = text
            .split("Objects per kind:\n")
            .nth(1)
            .unwrap_or_else(|| panic!("no objects per kind in:\n{text}"));
        let rows: Vec<Vec<&str>> = kinds
            .lines()
            .take_while(|l| !l.is_empty())
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0], ["PROJECT", "KIND", "OBJECTS"], "{text}");
        assert_eq!(rows[1], ["shop", "ConfigMap", "2"], "{text}");
        assert_eq!(rows[2], ["Deployment.apps", "1"], "{text}");
        assert_eq!(rows[3], ["Secret", "1"], "{text}");
        assert_eq!(rows[4], ["big", "Secret", "1"], "{text}");
        let tokens = text
            .split("Tokens a restore regenerates (new values, names only):\n")
            .nth(1)
            .unwrap_or_else(|| panic!("no tokens in:\n{text}"));
        assert!(
            tokens.contains("shop     2       stripe-key, mail?[2J-key"),
            "{text}"
        );
        assert!(
            tokens.contains("big      250     first and 249 more not listed here"),
            "{text}"
        );
        assert!(
            !tokens.contains("quiet"),
            "a project without tokens: {text}"
        );
        assert!(!text.contains('\x1b'), "{text:?}");
    }

    #[test]
    fn a_volume_size_in_plain_bytes_reads_like_the_other_sizes_and_a_quantity_stays_as_written() {
        assert_eq!(volume_size(Some("40098966")), bytes(40_098_966));
        assert!(volume_size(Some("40098966")).ends_with("MiB"));
        assert_eq!(volume_size(Some("1Gi")), "1Gi");
        assert_eq!(volume_size(None), "-");
    }

    #[test]
    fn progress_shows_a_bar_of_items_and_the_bytes_read() {
        let progress = crate::api::Progress {
            items_done: 50,
            items_total: 200,
            bytes_done: 3 * 1024 * 1024,
            ..crate::api::Progress::default()
        };
        let now = jiff::Timestamp::from_second(1_000).expect("time");
        let line = progress_line(Some("Running"), Some(&progress), now);
        assert!(line.starts_with("Running"), "{line}");
        assert!(
            line.contains("[######..................] 50/200 items"),
            "{line}"
        );
        assert!(line.contains("read"), "{line}");
        assert!(!line.contains("left"), "no estimate yet: {line}");
        assert_eq!(progress_line(Some("Queued"), None, now), "Queued");
    }

    #[test]
    fn a_restore_shows_bytes_against_the_total_and_the_time_left() {
        let now = jiff::Timestamp::from_second(1_000).expect("time");
        let progress = crate::api::Progress {
            items_done: 2_500,
            items_total: 10_000,
            bytes_done: 1024 * 1024,
            bytes_total: 4 * 1024 * 1024,
            estimated_completion_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::from_second(1_200).expect("time"),
            )),
        };
        let line = progress_line(Some("Running"), Some(&progress), now);
        assert!(
            line.contains("2500/10000 items, 1.0 MiB/4.0 MiB read"),
            "{line}"
        );
        assert!(line.ends_with("about 3m20s left"), "{line}");
    }

    #[test]
    fn only_the_exact_words_confirm_a_restore() {
        assert!(confirms("I understand\n"));
        assert!(!confirms("i understand"));
        assert!(!confirms("yes"));
        assert!(!confirms(""));
    }
}
