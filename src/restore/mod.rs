//! ProjectRestore: a backed-up project comes back as a new, isolated namespace.
//! Pure parts (decide, rewrite, tokens, status) are wired to the cluster by `controller`, which
//! reads through `observe` and writes through `apply`.

pub mod apply;
pub mod controller;
pub mod databases;
pub mod decide;
pub mod error;
pub mod namespace;
pub mod observe;
pub mod rewrite;
pub mod selector;
pub mod status;
pub mod tokens;
pub mod volumes;
