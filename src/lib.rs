//! Rewind: back up the accounts of a multi-tenant Kubernetes platform and restore their projects.

pub mod account_lock;
pub mod api;
pub mod archive;
pub mod backup;
pub mod backup_limit;
pub mod cli;
pub mod context;
pub mod database;
pub mod delete;
pub mod duration;
pub mod events;
pub mod exec;
pub mod lease_observer;
pub mod manifest;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod operator;
pub mod reflectors;
pub mod repository;
pub mod restore;
pub mod retry;
pub mod schedule;
mod shape;
pub mod snapshot;
pub mod status;
pub mod volume;
