//! Fuzzes the tree stream decoder (a volume's files): records, data and the end record.
#![no_main]
use std::io::Read;

use libfuzzer_sys::fuzz_target;
use rewind::volume::decode::{Decoder, Record};

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new(data);
    while let Ok(Record::Entry(_)) = decoder.next_record() {
        if std::io::copy(&mut decoder.data(), &mut std::io::sink()).is_err() {
            break;
        }
    }
    let _ = decoder.data().read(&mut [0u8; 1]);
});
