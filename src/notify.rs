//! Webhook notifications.

pub mod controller;
pub mod decide;
pub mod notice;

pub use controller::*;
