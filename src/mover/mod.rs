//! Mover pods as objects (pure): the PVCs and pods that run `rewind volume backup|restore` on a
//! node, so that volume bytes move between volumes and the repository without passing through
//! the operator, and the database workers (`worker`) that do the same for dumps. How the operator creates, watches and cleans them up: docs/volumes.md, "Movers".
//!
//! Everything here is a function of the operation, its volume record, the settings and the time
//! left (computed by the caller from an injected clock): no client, no clock. Names are
//! deterministic, so a restarted operator finds the movers it started.

pub mod apply;
pub mod backup;
pub mod error;
pub mod names;
pub mod pod;
pub mod restore;
pub mod settings;
pub mod state;
pub mod worker;

pub use backup::{BackupMover, BackupVolume, backup_mover};
pub use error::MoverError;
pub use names::{MoverRole, mover_name};
pub use restore::{RepositoryCopy, RestoreMover, RestoreVolume, restore_mover};
pub use settings::{MoverAccess, MoverResources, MoverSettings, Movers};
pub use state::{MoverState, copy_record, mover_state};
pub use worker::{DatabasePod, DumpSummary, Worker, WorkerJob, WorkerSpec, dump_summary, worker};
