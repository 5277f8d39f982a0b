//! Fuzzes the sealed-object and wrapped-key openers: arbitrary bytes must fail authentication cleanly.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rewind::repository::crypto::{MasterKey, RepoKeys};

fuzz_target!(|data: &[u8]| {
    let master = MasterKey::from_text("fuzzing master key, not secret").expect("valid key");
    let _ = RepoKeys::unwrap(data, &master);
    let keys = RepoKeys::generate();
    let _ = rewind::repository::format::open_json::<serde_json::Value>(&keys, "snapshots/x", data);
    let _ = rewind::repository::format::decode_blob(&keys, &[0u8; 32], data, 1024, "packs/x");
});
