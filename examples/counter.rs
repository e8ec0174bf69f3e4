//! A counter actor in its own process: ask, tell, a bounded wait, and a clean stop.
//!
//! `cargo run --release --example counter`

use std::time::Duration;

use procactor::{ActorRef, ExitReason};

struct Counter {
    total: u64,
}

#[procactor::actor]
impl Counter {
    fn init(start: u64) -> Self {
        Counter { total: start }
    }

    /// Adds `n`; returns the new total.
    pub fn add(&mut self, n: u64) -> u64 {
        self.total += n;
        self.total
    }

    /// The total so far.
    pub fn get(&self) -> u64 {
        self.total
    }

    fn stopped(&mut self, reason: &ExitReason) {
        println!(
            "  [counter pid {}] stopped ({reason}) at {}",
            std::process::id(),
            self.total
        );
    }
}

#[procactor::main]
fn main() -> procactor::Result<()> {
    let counter: ActorRef<Counter> = procactor::spawn::<Counter>(100)?;
    println!(
        "counter actor {:?} runs as pid {} (we are {})",
        counter.name(),
        counter.pid(),
        std::process::id()
    );
    println!("add(5) -> {}", counter.add(5)?);
    for _ in 0..1000 {
        counter.cast().add(1)?; // tell: no reply awaited, written in batches
    }
    println!("after 1000 tells: get() -> {}", counter.get()?);
    println!(
        "bounded ask: {}",
        counter.timeout(Duration::from_secs(1)).get()?
    );
    counter.stop()?;
    println!("joined: {}", counter.join()?);
    Ok(())
}
