// A closure that captures a variable cannot run in a child: the child has no copy of it.
fn main() {
    procactor::init();
    let greeting = String::from("hello");
    let _ = procactor::Process::new(move |n: u32| format!("{greeting} {n}"), 1);
}
