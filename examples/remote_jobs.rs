//! A job queue served by a remote manager: the server publishes a list of jobs and a dict of
//! results; workers on other hosts connect with the address and the key, take jobs until the
//! list is empty and write their results. The link is authenticated and encrypted.
//!
//! ```text
//! cargo run --release --example remote_jobs                 # server and 3 workers, here
//! cargo run --release --example remote_jobs -- serve 0.0.0.0:7000
//! cargo run --release --example remote_jobs -- work 10.0.0.5:7000    # on another host
//! ```
//!
//! (CPython: a `BaseManager` subclass with `register('get_jobs', ...)`, `start()`, and
//! `connect()` in the workers; here every call has a deadline, a worker host that vanishes has
//! its references released after the heartbeat timeout, and nothing executable crosses the wire.)

use std::time::Duration;

use procactor::connection::{Address, Client, Listener};
use procactor::manager::{DictProxy, ListProxy, RemoteManager};
use procactor::{Error, Manager, Process};

const KEY: &[u8] = b"remote jobs example key";

/// The job: the number of Collatz steps from `n` to 1.
fn steps(mut n: u64) -> u64 {
    let mut s = 0;
    while n != 1 {
        n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
        s += 1;
    }
    s
}

/// A worker: connects like any other host, takes jobs until there are none.
fn worker(address: Address) -> Result<usize, String> {
    work(address).map_err(|e| e.to_string())
}

fn work(address: Address) -> procactor::Result<usize> {
    let remote = RemoteManager::connect(&Client::new(&address).authkey(KEY))?;
    let jobs: ListProxy<u64> = remote.get("jobs")?;
    let results: DictProxy<u64, u64> = remote.get("results")?;
    let mut done = 0;
    loop {
        match jobs.pop() {
            Ok(n) => {
                results.insert(n, steps(n))?;
                done += 1;
            }
            Err(Error::NotFound(_)) => break, // no job left (pop from an empty list)
            Err(e) => return Err(e),
        }
    }
    results.len()?; // a call that waits: every insert of ours is applied
    Ok(done)
}

type Served = (Manager, procactor::manager::Gateway, DictProxy<u64, u64>);

fn serve(listen: &str) -> procactor::Result<Served> {
    let m = Manager::start()?;
    let gateway = m.serve(Listener::bind(listen)?.authkey(KEY))?;
    let jobs = m.list_from((1..=2_000u64).collect())?;
    let results = m.dict::<u64, u64>()?;
    gateway.register("jobs", &jobs)?;
    gateway.register("results", &results)?;
    println!("serving 2000 jobs at {}", gateway.address());
    Ok((m, gateway, results))
}

fn main() -> procactor::Result<()> {
    procactor::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [mode, address] if mode == "serve" => {
            let (_m, gateway, _results) = serve(address)?;
            loop {
                std::thread::sleep(Duration::from_secs(10));
                println!("{} workers connected", gateway.sessions());
            }
        }
        [mode, address] if mode == "work" => {
            let done = work(address.parse()?)?;
            println!("did {done} jobs");
            Ok(())
        }
        _ => {
            let (_m, gateway, results) = serve("127.0.0.1:0")?;
            let workers = (0..3)
                .map(|_| Process::new(worker, gateway.address().clone()).start())
                .collect::<procactor::Result<Vec<_>>>()?;
            let mut total = 0;
            for (i, w) in workers.into_iter().enumerate() {
                let done = w.join()?.map_err(Error::NotFound)?;
                println!("worker {i} did {done} jobs");
                total += done;
            }
            assert_eq!(total, 2_000);
            assert_eq!(results.len()?, 2_000);
            assert_eq!(results.get(&27)?, Some(111));
            println!("2000 jobs done by 3 workers over encrypted TCP");
            Ok(())
        }
    }
}
