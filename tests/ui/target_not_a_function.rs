// Something that is not a function at all gets procactor's message, saying what a target is.
fn main() {
    procactor::init();
    let _ = procactor::Process::new("run me", 1);
}
