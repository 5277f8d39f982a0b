//! The ProjectRestore controller: a backed-up project comes back as a new, isolated namespace.
//! `controller` wires observe (reads) → decide (pure, with the status builders in
//! `decide::status`) → apply (writes) and reports; `error` says what went wrong. The restore's
//! own work is `execute`, with its parts: `namespace`, `rewrite`, `tokens`, `volumes`,
//! `movers`, `databases` (in process, or by `workers` pods).

pub mod apply;
pub mod controller;
pub mod create;
pub mod databases;
pub mod decide;
pub mod error;
pub mod execute;
pub mod movers;
pub mod namespace;
pub mod observe;
pub mod progress;
pub mod rewrite;
pub mod tokens;
pub mod volumes;
pub mod workers;

pub use controller::run;
