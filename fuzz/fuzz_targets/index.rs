//! Fuzzes the pack index decoder (zstd JSON with a version).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rewind::repository::format::parse_json::<rewind::repository::format::PackIndex>(data, "index/fuzz");
});
