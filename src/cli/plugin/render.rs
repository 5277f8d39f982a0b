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
        "NOTES".into(),
    ]];
    for backup in sorted {
        let status = backup.status.clone().unwrap_or_default();
        rows.push([
            backup.metadata.name.clone().unwrap_or_default(),
            backup.spec.account.clone(),
            status
                .phase
                .map(|p| crate::notify::notice::phase_name(&p))
                .unwrap_or_else(|| "Pending".into()),
            when(taken(backup).as_ref()),
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
    fn only_the_exact_words_confirm_a_restore() {
        assert!(confirms("I understand\n"));
        assert!(!confirms("i understand"));
        assert!(!confirms("yes"));
        assert!(!confirms(""));
    }
}
