//! `pool.map(square, ...)`, then `apply`, `apply_async` and `map_async`. Python:
//! ```python
//! with Pool(4) as pool:
//!     print(pool.map(square, range(10)))
//!     print(pool.apply(square, (12,)))
//!     print([r.get() for r in [pool.apply_async(square, (i,)) for i in range(5)]])
//!     print(pool.map_async(square, range(10, 15)).get())
//! ```
use procactor::Pool;

fn square(x: u64) -> u64 {
    x * x
}

fn main() -> procactor::Result<()> {
    procactor::init();
    let pool = Pool::new(4)?;
    println!(
        "pool of {} workers: pids {:?}",
        pool.processes(),
        pool.pids()
    );

    let squares = pool.map(square, 0..10)?;
    println!("map(square, 0..10)          = {squares:?}");

    println!("apply(square, 12)           = {}", pool.apply(square, 12)?);

    let pending: Vec<_> = (0..5)
        .map(|i| pool.apply_async(square, i))
        .collect::<procactor::Result<_>>()?;
    let got: Vec<u64> = pending
        .iter()
        .map(|r| r.get())
        .collect::<procactor::Result<_>>()?;
    println!("apply_async x5, then get    = {got:?}");

    let r = pool.map_async(square, 10..15)?;
    println!("map_async(square, 10..15)   = {:?}", r.get()?);

    pool.close();
    pool.join()?;
    println!("closed and joined: {} workers left", pool.pids().len());
    Ok(())
}
