//! Seed port: ten processes sleeping 1 s each finish in about 1 s, not 10.
//!
//! Python:
//! ```python
//! ps = [Process(target=time.sleep, args=(1,)) for _ in range(10)]
//! for p in ps: p.start()
//! for p in ps: p.join()
//! ```
use std::time::{Duration, Instant};

use procactor::Process;

fn sleep_one_second(i: u32) -> u32 {
    std::thread::sleep(Duration::from_secs(1));
    i
}

#[procactor::main]
fn main() -> Result<(), procactor::Error> {
    let t = Instant::now();
    let ps = (0..10)
        .map(|i| {
            Process::new(sleep_one_second, i)
                .name(format!("sleeper-{i}"))
                .start()
        })
        .collect::<Result<Vec<_>, _>>()?;
    for p in &ps {
        p.join()?;
    }
    let took = t.elapsed();
    println!("10 processes slept 1 s each; all done in {took:.2?} (sequentially: ~10 s)");
    assert!(
        took < Duration::from_secs(5),
        "they did not run in parallel"
    );
    Ok(())
}
