#[procactor::main(fork)]
fn main() {}
