// A zero-argument target is the function itself: a `fn() -> R` pointer has no way to travel
// (unlike `fn(A) -> R` pointers), and the build says what to write instead.
fn answer() -> u32 {
    42
}

fn main() {
    procactor::init();
    let f: fn() -> u32 = answer;
    let _ = procactor::Process::new(f, ()).start();
}
