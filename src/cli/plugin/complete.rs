//! Shell completion for `kubectl rewind`: kubectl (1.26 and later) asks an executable named
//! `kubectl_complete-rewind` on PATH for the candidates of the word being typed — this binary,
//! linked under that name (`make install-plugin` does it). It completes commands, their flags,
//! and backup, restore and account names read with the caller's kubeconfig.

use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::api::{AccountBackup, ProjectRestore};

/// Tells kubectl not to fall back to file names (cobra's ShellCompDirectiveNoFileComp).
const NO_FILE_COMPLETION: u32 = 4;

/// Names in the cluster that completion offers.
#[derive(Clone, Debug, Default)]
pub struct Names {
    /// AccountBackup names.
    pub backups: Vec<String>,
    /// ProjectRestore names.
    pub restores: Vec<String>,
    /// Accounts that have backups.
    pub accounts: Vec<String>,
}

/// What a command's positional argument names, so completion knows which names to offer.
fn argument_of(command: &str) -> Option<fn(&Names) -> Vec<String>> {
    match command {
        "describe" | "restore" => Some(|names| names.backups.clone()),
        "log" => Some(|names| [names.backups.clone(), names.restores.clone()].concat()),
        "list" | "restores" | "backup" => Some(|names| names.accounts.clone()),
        _ => None,
    }
}

/// Whether completing `words` (what follows `kubectl rewind`, the last one being typed) needs
/// names from the cluster.
pub fn needs_names(words: &[String]) -> bool {
    words.len() == 2 && argument_of(&words[0]).is_some() && !words[1].starts_with('-')
}

/// The candidates for the last of `words` (pure), then kubectl's directive line.
pub fn candidates(words: &[String], names: &Names) -> Vec<String> {
    let command =
        <super::PluginArgs as clap::Args>::augment_args(clap::Command::new("kubectl rewind"));
    let typed = words.last().map(String::as_str).unwrap_or_default();
    let mut out: Vec<String> = match words {
        [] | [_] => command
            .get_subcommands()
            .map(|sub| sub.get_name().to_string())
            .filter(|name| name != "help")
            .collect(),
        [first, ..] if typed.starts_with('-') => command
            .find_subcommand(first)
            .into_iter()
            .flat_map(|sub| sub.get_arguments().chain(command.get_arguments()))
            .filter_map(|arg| arg.get_long().map(|long| format!("--{long}")))
            .collect(),
        [first, _] => argument_of(first)
            .map(|names_of| names_of(names))
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    out.retain(|candidate| candidate.starts_with(typed));
    out.sort();
    out.dedup();
    out.push(format!(":{NO_FILE_COMPLETION}"));
    out
}

/// Prints the candidates for `words`, reading names from the cluster only when they are needed.
/// A cluster that cannot be read completes nothing, never prints an error into the shell.
pub async fn run(words: Vec<String>) {
    let names = if needs_names(&words) {
        read_names().await.unwrap_or_default()
    } else {
        Names::default()
    };
    for line in candidates(&words, &names) {
        println!("{line}");
    }
}

async fn read_names() -> Result<Names, kube::Error> {
    let client = Client::try_default().await?;
    let backups: Api<AccountBackup> = Api::all(client.clone());
    let restores: Api<ProjectRestore> = Api::all(client);
    let backups = backups.list(&ListParams::default()).await?.items;
    let mut accounts: Vec<String> = backups.iter().map(|b| b.spec.account.clone()).collect();
    accounts.sort();
    accounts.dedup();
    Ok(Names {
        backups: backups.iter().map(ResourceExt::name_any).collect(),
        restores: restores
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect(),
        accounts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(typed: &[&str]) -> Vec<String> {
        typed.iter().map(|w| w.to_string()).collect()
    }

    fn names() -> Names {
        Names {
            backups: vec!["acme-nightly".into(), "globex-weekly".into()],
            restores: vec!["acme-nightly-restore-x1".into()],
            accounts: vec!["acme".into(), "globex".into()],
        }
    }

    #[test]
    fn commands_complete_first_then_names_of_what_they_take() {
        let first = candidates(&words(&["de"]), &names());
        assert_eq!(first, ["describe", ":4"]);
        let all = candidates(&words(&[""]), &names());
        for command in ["list", "describe", "restores", "log", "backup", "restore"] {
            assert!(all.contains(&command.to_string()), "{all:?}");
        }
        assert_eq!(
            candidates(&words(&["describe", "acme"]), &names()),
            ["acme-nightly", ":4"]
        );
        assert_eq!(
            candidates(&words(&["log", "acme-n"]), &names()),
            ["acme-nightly", "acme-nightly-restore-x1", ":4"]
        );
        assert_eq!(
            candidates(&words(&["list", "g"]), &names()),
            ["globex", ":4"]
        );
        assert!(needs_names(&words(&["describe", ""])));
        assert!(!needs_names(&words(&["des"])));
    }

    #[test]
    fn flags_complete_for_the_command_being_typed() {
        let flags = candidates(&words(&["restore", "acme-nightly", "--"]), &names());
        for flag in ["--project", "--to", "--wait", "--output"] {
            assert!(flags.contains(&flag.to_string()), "{flags:?}");
        }
        assert_eq!(
            candidates(&words(&["backup", "--no"]), &names()),
            ["--notes", ":4"]
        );
    }
}
