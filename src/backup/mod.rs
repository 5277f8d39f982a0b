//! The AccountBackup controller: `controller` wires observe (reads) → decide (pure) → apply
//! (writes) and reports; `error` says what went wrong. The copy itself is `execute`, with its
//! parts: `hooks`, `volumes`, `databases` (in process, or by `workers` pods), `movers`,
//! `progress`, and `resume` for a copy found half done;
//! `sync` rebuilds lost AccountBackups from the repository.
//!
//! A backup's phase lives in its status, so every step re-runs safely after a restart: a
//! Running backup found by a new leader is copied again (data already in the repository is
//! deduplicated), never left Running for ever.

pub mod apply;
pub mod controller;
pub mod databases;
pub mod decide;
pub mod error;
pub mod execute;
pub mod hooks;
pub mod movers;
pub mod observe;
pub mod progress;
pub mod resume;
pub mod sync;
pub mod volumes;
pub mod workers;

pub use controller::run;
