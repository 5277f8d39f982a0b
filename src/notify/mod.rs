//! Webhook notifications: one JSON POST when a backup or restore finishes (completes, partly
//! fails or fails), to a URL read from a file mounted from a Secret. The delivery is recorded
//! in the object's `status.notification`, so an outcome is notified once, across restarts.
//! `controller` is the shell the backup and restore controllers call: `observe` reads the
//! recorded delivery, `decide` (pure) says whether and when to send, `apply` sends and records;
//! `notice` builds the JSON; `error` says why a delivery failed.

pub mod apply;
pub mod controller;
pub mod decide;
pub mod error;
pub mod notice;
pub mod observe;

pub use apply::Notifier;
pub use controller::{notify_outcome, sooner_of};
