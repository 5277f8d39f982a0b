//! Command-line surface of the `rewind` binary: one module per subcommand.

pub mod crd;
pub mod plugin;
