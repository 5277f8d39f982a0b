//! The ProjectRestore controller's pure parts: manifest rewriting and token regeneration.
//! (The controller itself is not wired yet; see the open issue.)

pub mod decide;
pub mod rewrite;
pub mod tokens;
