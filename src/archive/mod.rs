//! What an account's backup is in the repository: the store it is written to and read from,
//! its stream names and metadata, and the outcome record that lets it be rebuilt. Backup,
//! restore and sync all read these from here, never from each other.

pub mod layout;
pub mod store;
