//! Command-line surface of the `rewind` binary: one module per subcommand.

pub mod crd;
pub mod database;
pub mod plugin;
pub mod repo;
pub mod volume;

/// For the command-line tools (`rewind repo`, `rewind crd`, the plugin): a reader that goes
/// away (`rewind repo ls | head -1`) ends the process quietly, as it does every Unix filter,
/// instead of a panic on the next print. Not for the operator, whose sockets must survive it.
pub fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
