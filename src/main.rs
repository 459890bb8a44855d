//! The `switchboard` command: `serve` runs the standalone server.
fn main() {
    eprintln!("switchboard: the standalone server is being built; run `cargo run --release --example echo` for now");
    std::process::exit(2);
}
