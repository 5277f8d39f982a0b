//! `kubectl rewind` (the `rewind` binary installed as `kubectl-rewind`, or `rewind kubectl`):
//! list an account's backups, describe one, list restores, show an activity log, take a backup
//! now, and restore after the user types `I understand`. Uses the caller's kubeconfig and permissions.

pub mod complete;
pub mod render;

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};

use crate::api::{
    AccountBackup, AccountBackupSpec, BackupPhase, ProjectRestore, ProjectRestoreSpec,
};

/// Backups and restores from kubectl.
#[derive(clap::Args, Debug)]
pub struct PluginArgs {
    #[command(subcommand)]
    pub command: PluginCommand,
    /// Output for scripts: `json` or `yaml` prints the objects themselves (list, describe,
    /// restores, log); the other commands refuse it.
    #[arg(short = 'o', long = "output", global = true, value_parser = ["json", "yaml"])]
    pub output: Option<String>,
}

/// Prints `value` as JSON or YAML; false when no such output was asked for.
fn print_as(output: Option<&str>, value: &impl serde::Serialize) -> anyhow::Result<bool> {
    match output {
        Some("json") => println!("{}", serde_json::to_string_pretty(value)?),
        Some("yaml") => print!("{}", serde_yaml::to_string(value)?),
        _ => return Ok(false),
    }
    Ok(true)
}

/// An error when `-o` was given to a command that cannot print objects (pure): `backup` and
/// `restore` print the new object's name and a dialogue, and ignoring `-o` would hand a script
/// text it cannot parse.
fn refuse_output(command: &PluginCommand, output: Option<&str>) -> anyhow::Result<()> {
    let name = match command {
        PluginCommand::Backup { .. } => "backup",
        PluginCommand::Restore { .. } => "restore",
        _ => return Ok(()),
    };
    if let Some(format) = output {
        bail!(
            "`kubectl rewind {name}` cannot print -o {format}: it prints the new object's name; -o json|yaml is for list, describe, restores and log (e.g. `kubectl rewind describe BACKUP -o {format}`)"
        );
    }
    Ok(())
}

/// The plugin's commands.
#[derive(clap::Subcommand, Debug)]
pub enum PluginCommand {
    /// List backups, newest first, with date, size and notes.
    List {
        /// Only this account's backups.
        account: Option<String>,
    },
    /// What a backup holds: projects, objects, volumes, database dumps, what was left out and failures.
    Describe {
        /// The AccountBackup.
        backup: String,
    },
    /// List restores, newest first, with phase, source backup and target namespaces.
    Restores {
        /// Only this account's restores.
        account: Option<String>,
    },
    /// Show the activity log of an AccountBackup or ProjectRestore (errors in red on a terminal).
    Log {
        /// The AccountBackup or ProjectRestore.
        name: String,
    },
    /// Take a backup of ACCOUNT now; prints the new AccountBackup's name.
    Backup {
        /// The account (its projects are the namespaces labelled rewind.dev/account=ACCOUNT).
        account: String,
        /// Notes shown in `list` (e.g. "before the 2.0 release").
        #[arg(long)]
        notes: Option<String>,
        /// Wait until the backup finishes, then print its outcome.
        #[arg(long)]
        wait: bool,
    },
    /// Restore projects of BACKUP into new namespaces, after you type `I understand`.
    Restore {
        /// The AccountBackup to restore from.
        backup: String,
        /// A project to restore (repeat for several); default: every project of the backup.
        #[arg(long = "project")]
        projects: Vec<String>,
        /// Name the new namespace of a project: --to shop=shop-yesterday (repeatable).
        #[arg(long = "to", value_name = "PROJECT=NAMESPACE")]
        targets: Vec<String>,
        /// Wait until the restore finishes, showing its progress and the time left.
        #[arg(long)]
        wait: bool,
    },
}

/// Runs one plugin command.
pub async fn run(args: PluginArgs) -> anyhow::Result<()> {
    refuse_output(&args.command, args.output.as_deref())?;
    let client = Client::try_default()
        .await
        .context("connecting with your kubeconfig")?;
    let backups: Api<AccountBackup> = Api::all(client.clone());
    let output = args.output.as_deref();
    match args.command {
        PluginCommand::List { account } => {
            let params = ListParams::default();
            let mut items = backups.list(&params).await?.items;
            if let Some(account) = account {
                items.retain(|b| b.spec.account == account);
            }
            if !print_as(output, &items)? {
                print!("{}", render::backup_table(&items));
            }
        }
        PluginCommand::Describe { backup } => {
            let Some(found) = backups.get_opt(&backup).await? else {
                bail!("no AccountBackup named {backup}: see `kubectl rewind list`");
            };
            if !print_as(output, &found)? {
                print!("{}", render::backup_description(&found));
            }
        }
        PluginCommand::Restores { account } => {
            let restores: Api<ProjectRestore> = Api::all(client.clone());
            let mut items = restores.list(&ListParams::default()).await?.items;
            if let Some(account) = account {
                items.retain(|r| r.spec.account == account);
            }
            if !print_as(output, &items)? {
                print!("{}", render::restore_table(&items));
            }
        }
        PluginCommand::Log { name } => {
            let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            let restores: Api<ProjectRestore> = Api::all(client.clone());
            let entries = if let Some(backup) = backups.get_opt(&name).await? {
                backup.status.map(|s| s.activity).unwrap_or_default()
            } else if let Some(restore) = restores.get_opt(&name).await? {
                restore.status.map(|s| s.activity).unwrap_or_default()
            } else {
                bail!("no AccountBackup or ProjectRestore named {name}: see `kubectl rewind list`");
            };
            if !print_as(output, &entries)? {
                print!("{}", render::activity_log(&entries, color));
            }
        }
        PluginCommand::Backup {
            account,
            notes,
            wait,
        } => {
            let mut spec: AccountBackupSpec =
                serde_json::from_value(serde_json::json!({ "account": account }))?;
            spec.notes = notes;
            let backup = AccountBackup {
                metadata: ObjectMeta {
                    generate_name: Some(format!("{account}-now-")),
                    ..Default::default()
                },
                spec,
                status: None,
            };
            let created = backups.create(&PostParams::default(), &backup).await?;
            let name = created.name_any();
            println!("{name}");
            if wait {
                let phase = wait_finished(&backups, &name).await?;
                println!("{name}: {phase} (kubectl rewind log {name})");
                if phase == "Failed" {
                    std::process::exit(1);
                }
            }
        }
        PluginCommand::Restore {
            backup,
            projects,
            targets,
            wait,
        } => {
            let Some(source) = backups.get_opt(&backup).await? else {
                bail!("no AccountBackup named {backup}: see `kubectl rewind list`");
            };
            let targets = targets
                .iter()
                .map(|pair| {
                    pair.split_once('=')
                        .map(|(from, to)| (from.to_string(), to.to_string()))
                        .with_context(|| format!("--to takes PROJECT=NAMESPACE, not {pair}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            eprint!("{}", render::restore_prompt(&source, &projects, &targets));
            std::io::stderr().flush()?;
            let mut answer = String::new();
            std::io::stdin().lock().read_line(&mut answer)?;
            if !std::io::stdin().is_terminal() {
                // A script typed it: show the answer, so the transcript reads as a dialogue.
                eprintln!("{}", answer.trim_end());
            }
            if !render::confirms(&answer) {
                bail!(
                    "not confirmed: nothing was created (type `{}` exactly)",
                    render::CONFIRMATION
                );
            }
            let mut spec: ProjectRestoreSpec = serde_json::from_value(serde_json::json!({
                "account": source.spec.account,
                "backup": backup,
            }))?;
            spec.projects = projects;
            spec.target_namespaces = targets.into_iter().collect();
            let restore = ProjectRestore {
                metadata: ObjectMeta {
                    generate_name: Some(format!("{backup}-restore-")),
                    ..Default::default()
                },
                spec,
                status: None,
            };
            let restores: Api<ProjectRestore> = Api::all(client);
            let created = restores.create(&PostParams::default(), &restore).await?;
            let name = created.name_any();
            println!("{name}");
            if wait {
                let phase = wait_finished(&restores, &name).await?;
                println!("{name}: {phase} (kubectl rewind log {name})");
                if phase == "Failed" {
                    std::process::exit(1);
                }
            }
        }
    }
    Ok(())
}

/// What `--wait` needs of an AccountBackup or ProjectRestore.
trait Waited:
    kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug
{
    /// Its phase as the API spells it, if it has one yet.
    fn phase(&self) -> Option<&'static str>;
    /// Its progress.
    fn progress(&self) -> Option<&crate::api::Progress>;
}

impl Waited for AccountBackup {
    fn phase(&self) -> Option<&'static str> {
        self.status.as_ref()?.phase.map(BackupPhase::as_str)
    }
    fn progress(&self) -> Option<&crate::api::Progress> {
        self.status.as_ref()?.progress.as_ref()
    }
}

impl Waited for ProjectRestore {
    fn phase(&self) -> Option<&'static str> {
        self.status
            .as_ref()?
            .phase
            .map(crate::api::RestorePhase::as_str)
    }
    fn progress(&self) -> Option<&crate::api::Progress> {
        self.status.as_ref()?.progress.as_ref()
    }
}

/// Polls an AccountBackup or ProjectRestore until it has finished, drawing its progress;
/// returns its phase.
async fn wait_finished<K: Waited>(api: &Api<K>, name: &str) -> anyhow::Result<String> {
    let terminal = std::io::stderr().is_terminal();
    let mut shown = String::new();
    loop {
        let object = api.get(name).await?;
        let line = render::progress_line(object.phase(), object.progress(), jiff::Timestamp::now());
        if line != shown {
            // On a terminal one line redrawn in place; in a pipe one line per change.
            if terminal {
                eprint!("\r\x1b[2K{line}");
            } else {
                eprintln!("{line}");
            }
            shown = line;
        }
        if let Some(phase @ ("Completed" | "PartiallyFailed" | "Failed")) = object.phase() {
            if terminal {
                eprintln!();
            }
            return Ok(phase.to_string());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        plugin: PluginArgs,
    }

    fn refused(words: &[&str]) -> Option<String> {
        let cli = Cli::try_parse_from([&["kubectl-rewind"], words].concat()).expect("parses");
        refuse_output(&cli.plugin.command, cli.plugin.output.as_deref())
            .err()
            .map(|e| e.to_string())
    }

    #[test]
    fn output_formats_are_refused_by_commands_that_cannot_print_objects() {
        let backup = refused(&["backup", "acme", "-o", "json"]).expect("backup refuses -o");
        assert!(backup.contains("cannot print -o json"), "{backup}");
        assert!(refused(&["restore", "nightly", "-o", "yaml"]).is_some());
        for honoured in [
            &["list", "-o", "json"][..],
            &["describe", "nightly", "-o", "yaml"],
            &["restores", "-o", "json"],
            &["log", "nightly", "-o", "json"],
            &["backup", "acme"],
        ] {
            assert_eq!(refused(honoured), None, "{honoured:?}");
        }
    }
}
