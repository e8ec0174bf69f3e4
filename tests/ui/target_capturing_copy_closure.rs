// A closure that captures a copyable value still captures it: the child would not have it.
fn main() {
    procactor::init();
    let offset = 5u32;
    let _ = procactor::Process::new(move |n: u32| n + offset, 1);
}
