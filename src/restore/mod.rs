//! The ProjectRestore controller's pure parts: manifest rewriting and token regeneration.
//! (The controller itself is not wired yet; see the open issue.)

pub mod decide;
pub mod namespace;
pub mod rewrite;
pub mod selector;
pub mod status;
pub mod tokens;
