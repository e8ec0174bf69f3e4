//! A CPU-bound job: count the primes below 3,000,000 in 300 slices, sequentially and then with
//! a Pool, drawing a progress bar from `imap` as slices finish, and print the speed-up.
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use procactor::Pool;

const LIMIT: u64 = 3_000_000;
const SLICES: u64 = 300;

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// The primes in `[start, end)`.
fn count_primes((start, end): (u64, u64)) -> u64 {
    (start..end).filter(|&n| is_prime(n)).count() as u64
}

fn slices() -> Vec<(u64, u64)> {
    let step = LIMIT / SLICES;
    (0..SLICES).map(|i| (i * step, (i + 1) * step)).collect()
}

#[procactor::main]
fn main() -> procactor::Result<()> {
    let t = Instant::now();
    let sequential: u64 = slices().into_iter().map(count_primes).sum();
    let t_seq = t.elapsed();
    println!("sequential: {sequential} primes below {LIMIT} in {t_seq:.2?}");

    let pool = Pool::new(procactor::cpu_count())?;
    let bar = ProgressBar::new(SLICES);
    bar.set_style(
        ProgressStyle::with_template("pool: [{bar:40}] {pos}/{len} slices {elapsed_precise}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let t = Instant::now();
    let mut parallel = 0;
    for count in pool.imap(count_primes, slices())? {
        parallel += count?;
        bar.inc(1);
    }
    bar.finish();
    let t_par = t.elapsed();
    assert_eq!(parallel, sequential);
    println!(
        "pool of {}: {parallel} primes in {t_par:.2?}: {:.2}x the sequential speed",
        pool.processes(),
        t_seq.as_secs_f64() / t_par.as_secs_f64()
    );
    Ok(())
}
