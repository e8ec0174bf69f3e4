//! Seed port: a `Lock` keeps ten processes from printing over each other.
//!
//! Python:
//! ```python
//! def f(l, i):
//!     with l: print("hello world", i)
//! lock = Lock()
//! for num in range(10): Process(target=f, args=(lock, num)).start()
//! ```
//! Then the fault CPython cannot survive: a process killed while holding the lock.
use std::time::Duration;

use procactor::{Error, Event, Lock, Process};

fn f((lock, i): (Lock, u32)) {
    let _held = lock.acquire().expect("acquire");
    println!("hello world {i}");
}

fn hold_and_hang((lock, held): (Lock, Event)) {
    let _g = lock.acquire().expect("acquire");
    held.set();
    std::thread::sleep(Duration::from_secs(3600));
}

#[procactor::main]
fn main() -> Result<(), Error> {
    let lock = Lock::new()?;
    let ps = (0..10)
        .map(|i| Process::new(f, (lock.clone(), i)).start())
        .collect::<Result<Vec<_>, _>>()?;
    for p in ps {
        p.join()?;
    }

    let held = Event::new()?;
    let holder = Process::new(hold_and_hang, (lock.clone(), held.clone())).start()?;
    held.wait_timeout(Duration::from_secs(30))?;
    holder.kill()?; // SIGKILL while it holds the lock
    let _ = holder.join();
    let g = lock.acquire_timeout(Duration::from_secs(30))?;
    println!(
        "holder pid {} was killed holding the lock; we got it anyway (owner_died = {})",
        holder.pid(),
        g.owner_died()
    );
    assert!(g.owner_died());
    Ok(())
}
