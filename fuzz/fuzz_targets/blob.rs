//! Fuzzes the blob body decoder (flag ‖ raw or zstd): never a panic, never unbounded memory.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let raw_length = data.first().map(|b| usize::from(*b) << 12).unwrap_or(0);
    let _ = rewind::repository::format::decode_plain(data, raw_length, "fuzz");
});
