//! The BackupSchedule controller: creates one AccountBackup per slot and prunes by retention.

pub mod cron;
pub mod decide;
