//! Rewind: back up the accounts of a multi-tenant Kubernetes platform and restore their projects.

pub mod api;
pub mod cli;
