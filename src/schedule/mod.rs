//! The BackupSchedule controller: one AccountBackup per slot, pruned by retention.
//! `controller` wires observe (the schedule's backups, from the shared watch) → decide (pure:
//! the due slot, retention, the slot's backup and the status; `cron` parses the schedule) →
//! apply (create by a name derived from the slot, so a second create after a restart or a
//! leader change is AlreadyExists and harmless; delete pruned backups, whose finalizer releases
//! the data) and reports; `error` says what went wrong.

pub mod apply;
pub mod controller;
pub mod cron;
pub mod decide;
pub mod error;
pub mod observe;

pub use controller::run;
