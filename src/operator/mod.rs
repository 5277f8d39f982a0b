//! Runtime wiring of `rewind run`: configuration, leader election, probes and controllers.

pub mod http;
pub mod leader;
