//! The BackupSchedule controller.

pub mod controller;
pub mod cron;
pub mod decide;
pub mod error;
pub mod observe;

pub use controller::*;
