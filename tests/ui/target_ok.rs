// Every shape of target that can run in another process.
fn answer() -> u32 {
    42
}

fn double(x: u32) -> u32 {
    x * 2
}

fn main() {
    procactor::init();
    let _ = procactor::Process::new(answer, ());
    let _ = procactor::Process::new(double, 1);
    let _ = procactor::Process::new(|x: u32| x + 1, 1);
    let p: fn(u32) -> u32 = double;
    let _ = procactor::Process::new(p, 1);
}
