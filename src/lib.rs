//! Rewind: back up the accounts of a multi-tenant Kubernetes platform and restore their projects.

pub mod api;
pub mod cli;
pub mod duration;
pub mod manifest;
pub mod metrics;
pub mod operator;
pub mod status;
