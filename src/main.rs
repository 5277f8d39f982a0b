//! The `rewind` binary: wires the command line to the library; no logic lives here.
fn main() {
    println!("rewind {}", env!("CARGO_PKG_VERSION"));
}
