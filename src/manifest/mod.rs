//! Kubernetes manifests as backup data: which types are backed up, and what is stripped from them.

pub mod discovery;
pub mod sanitize;

pub use discovery::{BackedUpType, backed_up_types, object_skip_reason};
pub use sanitize::sanitize_for_backup;
