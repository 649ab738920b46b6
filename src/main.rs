fn main() {
    println!("kiln {}", env!("CARGO_PKG_VERSION"));
}
