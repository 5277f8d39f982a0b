//! The `rewind` binary: wires the command line to the library; no logic lives here.

use clap::{Parser, Subcommand};
use rewind::cli;

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
    /// Print the CustomResourceDefinitions generated from the Rust types.
    Crd(cli::crd::CrdArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd(args) => cli::crd::run(args),
    }
}
