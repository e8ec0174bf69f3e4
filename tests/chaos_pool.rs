//! Chaos: Pool and Executor while their workers are SIGKILLed at random moments, and thousands
//! of queued tasks on one and two workers.
//!
//! * Random kills: a killer thread SIGKILLs a random worker (from `pids()`) every few tens of
//!   milliseconds while `try_map`, `imap`, `imap_unordered`, `apply_async`, `submit` and
//!   `Executor::map` run. Every item resolves exactly once (none lost, none twice, none hung),
//!   with its value or `WorkerLost` naming a worker the killer killed; once the pool is dropped,
//!   the process holds the descriptors and children it held before.
//! * Queued: 5,000 × scale tasks queued at once (`apply_async`, `submit`, `map`) on one and on
//!   two workers all complete, each waited for with a timeout.
//!
//! One line per scenario: `chaos: <scenario>: key=value ...`. `PROCACTOR_CHAOS_SCALE` (default
//! 1) multiplies the work; `PROCACTOR_CHAOS_SEED` replays a run's kills.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{child_pids, open_fds, BOUND};
use procactor::{pool::as_completed, Error, Executor, Pool};

procactor::test_support!();

/// The scenarios count descriptors and children of the whole process: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn scale() -> usize {
    std::env::var("PROCACTOR_CHAOS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1)
}

fn seed() -> u64 {
    std::env::var("PROCACTOR_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

/// xorshift64*: small, and the same sequence for the same seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// A task: most are quick, one in four sleeps a little, so that kills land inside tasks as well
/// as between them.
fn work(x: u64) -> u64 {
    if x % 4 == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    x * 3 + 1
}

fn inc(x: u64) -> u64 {
    x + 1
}

/// What a scenario found; the invariants are asserted by `check`.
#[derive(Default, Debug)]
struct Figures {
    items: usize,
    kills: usize,
    /// Items that never resolved.
    lost: usize,
    /// Items that resolved more than once.
    duplicated: usize,
    /// Waits that ran out.
    hung: usize,
    fds_before: usize,
    fds_after: usize,
    /// Children left (alive or zombie) that were not there before.
    zombies: usize,
    /// Items that failed with `WorkerLost` (their worker was killed).
    worker_lost: usize,
    secs: f64,
}

impl Figures {
    fn print(&self, scenario: &str) {
        println!(
            "chaos: {scenario}: items={} kills={} lost={} duplicated={} hung={} fds_before={} \
             fds_after={} zombies={} worker_lost={} secs={:.2}",
            self.items,
            self.kills,
            self.lost,
            self.duplicated,
            self.hung,
            self.fds_before,
            self.fds_after,
            self.zombies,
            self.worker_lost,
            self.secs
        );
    }

    /// The promise: nothing lost, nothing twice, nothing hung, nothing left behind.
    fn check(&self, scenario: &str) {
        self.print(scenario);
        assert_eq!(
            (self.lost, self.duplicated, self.hung),
            (0, 0, 0),
            "{scenario}: {self:?}"
        );
        assert_eq!(self.fds_after, self.fds_before, "{scenario}: descriptors");
        assert_eq!(self.zombies, 0, "{scenario}: children left");
        assert!(
            self.worker_lost <= self.kills,
            "{scenario}: more items lost to dead workers than workers killed: {self:?}"
        );
    }
}

/// Runs a scenario on a thread; one that takes longer than `BOUND` per unit of scale (plus one
/// `BOUND`, for a machine under load) hung.
fn bounded_scenario<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(BOUND * (scale() as u32 + 1)) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("a scenario hung"),
        Err(_) => panic!("the scenario failed (see its panic above)"),
    }
}

/// The process's descriptors and children, after a pool has been made and dropped once (the first
/// one opens what the process keeps for good, such as its log channel).
fn settle() -> (usize, Vec<u32>) {
    drop(Pool::new(1).unwrap());
    (open_fds(), child_pids())
}

fn finish(f: &mut Figures, children_before: &[u32], started: Instant) {
    f.fds_after = open_fds();
    if f.fds_after != f.fds_before {
        // Say which, for whoever reads the failure.
        println!("chaos: descriptors open after: {:?}", common::fd_targets());
    }
    f.zombies = child_pids()
        .iter()
        .filter(|p| !children_before.contains(p))
        .count();
    f.secs = started.elapsed().as_secs_f64();
}

/// SIGKILLs a random worker every 10-60 ms until stopped; remembers whom.
struct Killer {
    stop: Arc<AtomicBool>,
    killed: Arc<Mutex<HashSet<u32>>>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl Killer {
    fn start(pids: impl Fn() -> Vec<u32> + Send + 'static, seed: u64) -> Killer {
        let stop = Arc::new(AtomicBool::new(false));
        let killed = Arc::new(Mutex::new(HashSet::new()));
        let (s, k) = (stop.clone(), killed.clone());
        let thread = std::thread::spawn(move || {
            let mut rng = Rng(seed);
            let mut kills = 0;
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10 + rng.below(50)));
                let pids = pids();
                if pids.is_empty() {
                    continue;
                }
                let pid = pids[rng.below(pids.len() as u64) as usize];
                // Recorded first: its WorkerLost may come back before kill_child returns.
                k.lock().unwrap().insert(pid);
                if kill_child(pid) {
                    kills += 1;
                }
            }
            kills
        });
        Killer {
            stop,
            killed,
            thread: Some(thread),
        }
    }

    fn was_killed(&self, pid: u32) -> bool {
        self.killed.lock().unwrap().contains(&pid)
    }

    /// Stops the killer; how many workers it killed.
    fn stop(&mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap())
    }
}

impl Drop for Killer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SIGKILLs `pid` if it is still a child of this process: through a pidfd, so that a worker that
/// ended (and whose pid was reused by someone else's process) is never signalled.
fn kill_child(pid: u32) -> bool {
    // SAFETY: pidfd_open on a pid; the descriptor is closed below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) } as i32;
    if fd < 0 {
        return false;
    }
    // The pidfd pins the process it was opened on: if that one is our child now, it is the
    // worker (a pid is not reused before its parent reaps it).
    let ours = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            rest.split(' ').nth(1)?.parse::<u32>().ok()
        })
        == Some(std::process::id());
    // SAFETY: a signal through the pidfd we own, then closing it.
    let sent = ours
        && unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        } == 0;
    unsafe { libc::close(fd) };
    sent
}

/// Checks one item's outcome: its value, or `WorkerLost` for a worker the killer killed.
fn judge(x: u64, r: &procactor::Result<u64>, killer: &Killer, f: &mut Figures) {
    match r {
        Ok(v) => assert_eq!(*v, work(x), "item {x}: a wrong result"),
        Err(Error::WorkerLost { pid, signal, .. }) => {
            assert_eq!(*signal, Some(libc::SIGKILL), "item {x}: {r:?}");
            assert!(
                killer.was_killed(*pid),
                "item {x}: lost to worker {pid}, which nobody killed"
            );
            f.worker_lost += 1;
        }
        Err(e) if e.is_timeout() => f.hung += 1,
        Err(e) => panic!("item {x}: unexpected {e:?}"),
    }
}

/// Counts the positions of an unordered stream: each of `0..n` once.
fn tally(seen: &[usize], n: usize, f: &mut Figures) {
    let mut count = vec![0usize; n];
    for &i in seen {
        count[i] += 1;
    }
    f.lost += count.iter().filter(|&&c| c == 0).count();
    f.duplicated += count.iter().filter(|&&c| c > 1).count();
}

#[test]
fn pool_under_random_worker_kills() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (fds_before, children) = settle();
    let seed = seed();
    println!("chaos: pool_random_kills: seed={seed}");
    let started = Instant::now();
    let n = 1_000 * scale() as u64;
    let mut f = bounded_scenario(move || {
        let mut f = Figures {
            fds_before,
            ..Figures::default()
        };
        let pool = Arc::new(Pool::new(3).unwrap());
        let p = pool.clone();
        let mut killer = Killer::start(move || p.pids(), seed);

        // try_map: chunks, so a kill costs one item of a chunk and the rest is retried.
        let all = pool.try_map(work, 0..n).unwrap();
        f.lost += (n as usize).saturating_sub(all.len());
        f.duplicated += all.len().saturating_sub(n as usize);
        for (x, r) in all.iter().enumerate() {
            judge(x as u64, r, &killer, &mut f);
        }
        // imap: in order, one item per run.
        let mut it = pool.imap(work, 0..n).unwrap();
        let mut taken = 0u64;
        while let Some(r) = it.next_timeout(BOUND) {
            judge(taken, &r, &killer, &mut f);
            taken += 1;
        }
        f.lost += (n - taken.min(n)) as usize;
        f.duplicated += taken.saturating_sub(n) as usize;
        // imap_unordered: every position once.
        let mut seen = Vec::new();
        for (i, r) in pool.imap_unordered(work, 0..n).unwrap() {
            judge(i as u64, &r, &killer, &mut f);
            seen.push(i);
        }
        tally(&seen, n as usize, &mut f);
        // apply_async, each waited for with a timeout.
        let pending: Vec<_> = (0..n).map(|x| pool.apply_async(work, x).unwrap()).collect();
        for (x, r) in pending.iter().enumerate() {
            judge(x as u64, &r.get_timeout(BOUND), &killer, &mut f);
        }

        f.items = 4 * n as usize;
        f.kills = killer.stop();
        drop(pool);
        f
    });
    finish(&mut f, &children, started);
    f.check("pool_random_kills");
}

#[test]
fn executor_under_random_worker_kills() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (fds_before, children) = settle();
    let seed = seed();
    println!("chaos: executor_random_kills: seed={seed}");
    let started = Instant::now();
    let n = 1_500 * scale() as u64;
    let mut f = bounded_scenario(move || {
        let mut f = Figures {
            fds_before,
            ..Figures::default()
        };
        let ex = Arc::new(Executor::new(3).unwrap());
        let e = ex.clone();
        let mut killer = Killer::start(move || e.pids(), seed);

        // submit + as_completed: every future yielded once.
        let futures: Vec<_> = (0..n).map(|x| ex.submit(work, x).unwrap()).collect();
        let index: HashMap<*const procactor::pool::Future<u64>, usize> = futures
            .iter()
            .enumerate()
            .map(|(i, fut)| (fut as *const _, i))
            .collect();
        let mut seen = Vec::new();
        for fut in as_completed(&futures) {
            let i = index[&(fut as *const _)];
            judge(i as u64, &fut.result_timeout(BOUND), &killer, &mut f);
            seen.push(i);
        }
        tally(&seen, n as usize, &mut f);
        // Executor::map, in order, each result with a timeout.
        let mut it = ex.map(work, 0..n).unwrap();
        let mut taken = 0u64;
        while let Some(r) = it.next_timeout(BOUND) {
            judge(taken, &r, &killer, &mut f);
            taken += 1;
        }
        f.lost += (n - taken.min(n)) as usize;
        f.duplicated += taken.saturating_sub(n) as usize;

        f.items = 2 * n as usize;
        f.kills = killer.stop();
        drop(killer);
        // Dropping waits for the workers (shutdown with wait): it must not hang either.
        drop(it);
        match Arc::try_unwrap(ex) {
            Ok(ex) => drop(ex),
            Err(_) => panic!("the executor is still shared"),
        }
        f
    });
    finish(&mut f, &children, started);
    f.check("executor_random_kills");
}

/// Thousands of tasks queued at once on `workers` workers: `apply_async`, `submit` and `map`,
/// each result waited for with a timeout.
fn queued(workers: usize) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (fds_before, children) = settle();
    let started = Instant::now();
    let n = 5_000 * scale() as u64;
    let mut f = bounded_scenario(move || {
        let mut f = Figures {
            fds_before,
            ..Figures::default()
        };
        let count = |r: procactor::Result<u64>, x: u64, f: &mut Figures| match r {
            Ok(v) => assert_eq!(v, x + 1, "item {x}"),
            Err(e) if e.is_timeout() => f.hung += 1,
            Err(e) => panic!("item {x}: {e:?}"),
        };
        let pool = Pool::new(workers).unwrap();
        for _round in 0..2 {
            let pending: Vec<_> = (0..n).map(|x| pool.apply_async(inc, x).unwrap()).collect();
            for (x, r) in pending.iter().enumerate() {
                count(r.get_timeout(BOUND), x as u64, &mut f);
            }
        }
        match pool.map_async(inc, 0..n).unwrap().get_timeout(BOUND) {
            Ok(all) => {
                f.lost += (n as usize).saturating_sub(all.len());
                for (x, v) in all.into_iter().enumerate() {
                    count(Ok(v), x as u64, &mut f);
                }
            }
            Err(e) if e.is_timeout() => f.hung += 1,
            Err(e) => panic!("map: {e:?}"),
        }
        drop(pool);
        let ex = Executor::new(workers).unwrap();
        for _round in 0..2 {
            let futures: Vec<_> = (0..n).map(|x| ex.submit(inc, x).unwrap()).collect();
            for (x, fut) in futures.iter().enumerate() {
                count(fut.result_timeout(BOUND), x as u64, &mut f);
            }
        }
        drop(ex);
        f.items = 5 * n as usize;
        f
    });
    finish(&mut f, &children, started);
    f.check(&format!(
        "queued_on_{workers}_worker{}",
        if workers > 1 { "s" } else { "" }
    ));
}

#[test]
fn thousands_of_queued_tasks_on_one_worker() {
    queued(1);
}

#[test]
fn thousands_of_queued_tasks_on_two_workers() {
    queued(2);
}
