//! Kubernetes manifests as backup data: which types are backed up, what is stripped from them,
//! and which Secrets are resource tokens (the backup lists them, a restore regenerates them).

pub mod discovery;
pub mod sanitize;
pub mod selector;
pub mod token;

pub use discovery::{BackedUpType, backed_up_types, object_skip_reason};
pub use sanitize::sanitize_for_backup;
pub use token::is_token;
