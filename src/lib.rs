//! Rewind: back up the accounts of a multi-tenant Kubernetes platform and restore their projects.

pub mod account_lock;
pub mod api;
pub mod backup;
pub mod cli;
pub mod context;
pub mod duration;
pub mod manifest;
pub mod metrics;
pub mod operator;
pub mod schedule;
pub mod status;
