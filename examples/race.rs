//! The race demo: two processes each add 1 to a shared counter 20,000 times. Without the lock,
//! read-modify-writes interleave and updates are lost; with it, the total is exactly 40,000.
//!
//! Python:
//! ```python
//! def work(v, n):
//!     for _ in range(n): v.value += 1          # racy
//! def work_locked(v, n):
//!     for _ in range(n):
//!         with v.get_lock(): v.value += 1
//! ```
use procactor::{shared::RawValue, Barrier, Error, Process, Value};

const N: u64 = 20_000;

fn racy((v, start): (RawValue<u64>, Barrier)) {
    start.wait().expect("barrier"); // both run at once
    for i in 0..N {
        let read = v.get();
        if i % 16 == 0 {
            // Let the other process in between the read and the write, as a preemption would
            // (so that the demo also shows the race on one CPU).
            std::thread::yield_now();
        }
        v.set(read + 1);
    }
}

fn locked(v: Value<u64>) {
    for _ in 0..N {
        *v.lock() += 1;
    }
}

#[procactor::main]
fn main() -> Result<(), Error> {
    // A race is likely, not certain (the scheduler may run the two one after the other): try a
    // few rounds until one loses updates.
    for round in 1..=5 {
        let raw = RawValue::new(0u64)?;
        let start = Barrier::new(2)?;
        let ps = (0..2)
            .map(|_| Process::new(racy, (raw.clone(), start.clone())).start())
            .collect::<Result<Vec<_>, _>>()?;
        for p in ps {
            p.join()?;
        }
        println!(
            "without a lock (round {round}): {} (lost {} updates)",
            raw.get(),
            2 * N - raw.get()
        );
        assert!(raw.get() <= 2 * N);
        if raw.get() < 2 * N {
            break;
        }
    }

    let v = Value::new(0u64)?;
    let ps = (0..2)
        .map(|_| Process::new(locked, v.clone()).start())
        .collect::<Result<Vec<_>, _>>()?;
    for p in ps {
        p.join()?;
    }
    println!("with the lock:  {}", v.get());
    assert_eq!(v.get(), 2 * N);
    Ok(())
}
