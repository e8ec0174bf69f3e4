//! Seed port: a process greets a name passed as its argument.
//!
//! Python:
//! ```python
//! def greet(name): print(f"Hello, {name}!")
//! p = Process(target=greet, args=("World",)); p.start(); p.join()
//! ```
use procactor::Process;

fn greet(name: String) -> String {
    let me = procactor::current_process();
    println!("[{} pid {}] Hello, {name}!", me.name, me.pid);
    format!("greeted {name}")
}

#[procactor::main]
fn main() -> Result<(), procactor::Error> {
    let p = Process::new(greet, "World".to_string())
        .name("greeter")
        .start()?;
    let said = p.join()?;
    println!(
        "parent: child {} (pid {}) returned {said:?}, exit code {:?}",
        p.name(),
        p.pid(),
        p.exitcode()
    );
    Ok(())
}
