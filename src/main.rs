fn main() {
    println!("wsgate {}", env!("CARGO_PKG_VERSION"));
}
