#[procactor::main]
struct Main;

fn main() {}
