//! `hoist`: the command-line interface.

fn main() {
    println!("hoist {}", env!("CARGO_PKG_VERSION"));
}
