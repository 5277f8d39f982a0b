//! The `rewind` binary: wires the command line to the library; no logic lives here.

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rewind::cli;
use rewind::cli::repo as repo_cli;
use rewind::operator::config::RunArgs;

/// Rewind backs up the accounts of a multi-tenant Kubernetes platform and
/// restores their projects into new, isolated namespaces.
#[derive(Parser, Debug)]
#[command(name = "rewind", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator (controllers, leader election, probes, metrics).
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions generated from the Rust types.
    Crd(cli::crd::CrdArgs),
    /// Work with a backup repository directly.
    Repo(repo_cli::RepoArgs),
    /// Copy a volume's file tree into the repository, or back (what a mover pod runs).
    Volume(cli::volume::VolumeArgs),
    /// Dump a database pod into the repository, or load a dump back (what a worker pod runs).
    Database(cli::database::DatabaseArgs),
    /// The kubectl plugin: install this binary as `kubectl-rewind` to run `kubectl rewind …`.
    Kubectl(cli::plugin::PluginArgs),
}

/// `kubectl rewind …` runs this binary as `kubectl-rewind`.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl rewind",
    version,
    about = "List, log, take and restore Rewind backups."
)]
struct Plugin {
    #[command(flatten)]
    args: cli::plugin::PluginArgs,
}

fn main() -> anyhow::Result<()> {
    rewind::memory::bound_allocator();
    let invoked_as = std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|path| {
            path.file_name()
                .map(|name| name.to_string_lossy().to_string())
        });
    if invoked_as.as_deref() == Some("kubectl_complete-rewind") {
        // kubectl asks for the completions of `kubectl rewind <args>`.
        rewind::cli::quiet_on_closed_pipe();
        let words = std::env::args().skip(1).collect();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(cli::plugin::complete::run(words));
        return Ok(());
    }
    let parsed = if invoked_as.as_deref() == Some("kubectl-rewind") {
        Cli {
            command: Command::Kubectl(Plugin::parse().args),
        }
    } else {
        Cli::parse()
    };
    // Both ring (kube) and aws-lc-rs (object_store) are linked: name the TLS provider once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match parsed.command {
        Command::Crd(args) => {
            rewind::cli::quiet_on_closed_pipe();
            cli::crd::run(args)
        }
        Command::Repo(args) => {
            rewind::cli::quiet_on_closed_pipe();
            runtime.block_on(repo_cli::run(args))
        }
        Command::Volume(args) => {
            rewind::cli::quiet_on_closed_pipe();
            runtime.block_on(cli::volume::run(args))
        }
        Command::Database(args) => runtime.block_on(cli::database::run(args)),
        Command::Kubectl(args) => {
            rewind::cli::quiet_on_closed_pipe();
            runtime.block_on(cli::plugin::run(args))
        }
        Command::Run(args) => runtime.block_on(async move {
            rewind::operator::logging::init(args.log_format);
            let key = repo_cli::master_key(args.repository_key_file.as_deref())?;
            let repository = rewind::operator::open_repository(&args.repository, &key)
                .await
                .with_context(|| format!("opening the repository {}", args.repository))?;
            rewind::operator::run(*args, Arc::new(repository)).await
        }),
    }
}
