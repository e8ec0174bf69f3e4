//! A supervisor that restarts a worker actor which panics on every third message. Each restart
//! is printed; the worker is found by name each time, and is a fresh process.
//!
//! `cargo run --release --example supervised`

use std::time::{Duration, Instant};

use procactor::{actor::ChildSpec, actor::Restart, actor::Strategy, actor::Supervisor};

struct Worker {
    handled: u32,
}

#[procactor::actor]
impl Worker {
    fn init(_: ()) -> Self {
        Worker { handled: 0 }
    }

    /// Squares `x`, but every third message crashes the worker.
    pub fn square(&mut self, x: u64) -> u64 {
        self.handled += 1;
        if self.handled % 3 == 0 {
            panic!("worker crashes on its message #{}", self.handled);
        }
        x * x
    }
}

#[procactor::main]
fn main() -> procactor::Result<()> {
    let sup = Supervisor::new(Strategy::OneForOne)
        .name("square-supervisor")
        .intensity(10, Duration::from_secs(60))
        .child(ChildSpec::new::<Worker>("squarer", ())?.restart(Restart::Permanent))
        .start()?;
    println!("supervisor pid {}", sup.pid());
    let mut restarts = 0;
    for x in 1..=9u64 {
        let worker = sup.child::<Worker>("squarer")?;
        match worker.square(x) {
            Ok(y) => println!("  {x}^2 = {y}  (worker pid {})", worker.pid()),
            Err(e) => {
                println!("  {x}: {e}");
                // Wait for the supervisor to put a fresh worker in its place.
                let t = Instant::now();
                while sup.restarts()? == restarts && t.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                restarts = sup.restarts()?;
                let fresh = sup.child::<Worker>("squarer")?;
                println!(
                    "  restart #{restarts}: worker pid {} replaced by pid {}",
                    worker.pid(),
                    fresh.pid()
                );
            }
        }
    }
    for c in sup.which_children()? {
        println!(
            "child {:?}: pid {:?}, restarted {} times",
            c.name, c.pid, c.restarts
        );
    }
    sup.stop()?;
    println!("supervisor: {}", sup.join()?);
    Ok(())
}
