//! Executor: `submit` + `as_completed` gives results in completion order, `executor.map` in
//! input order. Python:
//! ```python
//! with ProcessPoolExecutor(4) as ex:
//!     futures = [ex.submit(nap, s) for s in (0.8, 0.2, 0.5, 0.1)]
//!     for f in as_completed(futures): print(f.result())
//!     print(list(ex.map(nap, (0.3, 0.1, 0.2))))
//! ```
use std::time::{Duration, Instant};

use procactor::{pool::as_completed, Executor};

/// Sleeps `ms` milliseconds in a worker and says who it was.
fn nap(ms: u64) -> (u64, u32) {
    std::thread::sleep(Duration::from_millis(ms));
    (ms, std::process::id())
}

#[procactor::main]
fn main() -> procactor::Result<()> {
    let ex = Executor::new(4)?;
    let t = Instant::now();
    let futures = [800, 200, 500, 100]
        .into_iter()
        .map(|ms| ex.submit(nap, ms))
        .collect::<procactor::Result<Vec<_>>>()?;
    println!("submitted naps of 800, 200, 500, 100 ms to 4 workers");
    for f in as_completed(&futures) {
        let (ms, pid) = f.result()?;
        println!(
            "  {ms:>3} ms nap done (worker pid {pid}) at {:>4} ms",
            t.elapsed().as_millis()
        );
    }

    let t = Instant::now();
    let mapped = ex
        .map(nap, [300, 100, 200])?
        .map(|r| r.map(|(ms, _)| ms))
        .collect::<procactor::Result<Vec<_>>>()?;
    println!(
        "executor.map(nap, [300, 100, 200]) = {mapped:?} (input order) in {} ms",
        t.elapsed().as_millis()
    );
    Ok(())
}
