//! Chaos for the manager: the manager SIGKILLed under load, and holders SIGKILLed at random
//! moments while proxies are lent, adopted, used and dropped. Each scenario prints one line
//! `chaos: <scenario>: key=value ...` and asserts its invariants.
//!
//! `PROCACTOR_CHAOS_SCALE` (default 1) multiplies the rounds and the duration: 1 takes a few
//! seconds in a debug build; CI runs 10 in release
//! (`PROCACTOR_CHAOS_SCALE=10 cargo test --release --test 'chaos_*' -- --nocapture --test-threads=1`).

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{eventually, open_fds, reaped, Reaped, BOUND};
use procactor::{
    manager::DictProxy, manager::ListProxy, Connection, Error, ExitReason, Manager, Pipe, Process,
};

procactor::test_support!();

/// The scenarios count this process's descriptors: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn scale() -> u64 {
    std::env::var("PROCACTOR_CHAOS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

/// Runs `f` on a thread and fails the test if it takes longer than `limit` (a hung scenario is
/// a failed one; `common::bounded` with a bound that grows with the scale).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("the scenario hung"),
        Err(_) => panic!("the scenario failed (see its panic above)"),
    }
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process of the machine.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A small xorshift: the runs are random, and the seed is printed to replay one.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        Rng(now_ns() | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What a client saw: operations done, the error that ended it, and when (CLOCK_MONOTONIC).
type Outcome = (u64, String, u64);

/// Dict and list operations in a loop until one fails.
fn load_until_error((d, l, id): (DictProxy<u32, u64>, ListProxy<u32>, u32)) -> Outcome {
    let mut ops = 0;
    loop {
        let step = d
            .upsert(&id, 0, |n| *n += 1)
            .and_then(|_| l.append(id))
            .and_then(|_| l.len())
            .and_then(|_| d.get(&id));
        match step {
            Ok(_) => ops += 4,
            Err(e) => return (ops, format!("{e:?}"), now_ns()),
        }
    }
}

#[test]
fn a_manager_killed_under_load_fails_every_client_promptly() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    within(BOUND + Duration::from_secs(5 * scale()), || {
        const CLIENTS: u32 = 4;
        let rounds = 2 * scale();
        let mut rng = Rng::seeded();
        let seed = rng.0;
        let fds_before = open_fds();
        let (mut ops, mut slowest, mut errors) = (0u64, 0u64, 0usize);
        for _ in 0..rounds {
            let m = Manager::start().unwrap();
            let d = m.dict::<u32, u64>().unwrap();
            let l = m.list::<u32>().unwrap();
            let clients: Vec<Reaped<Outcome>> = (0..CLIENTS)
                .map(|id| {
                    reaped(
                        Process::new(load_until_error, (d.clone(), l.clone(), id))
                            .start()
                            .unwrap(),
                    )
                })
                .collect();
            // Under load: every client has made progress.
            assert!(eventually(BOUND, || (0..CLIENTS).all(|id| d
                .get(&id)
                .ok()
                .flatten()
                .unwrap_or(0)
                >= 20)));
            std::thread::sleep(Duration::from_millis(rng.below(30)));
            let killed_at = now_ns();
            // SAFETY: plain kill(2) of the manager, our child.
            assert_eq!(unsafe { libc::kill(m.pid() as i32, libc::SIGKILL) }, 0);
            for c in &clients {
                let (n, err, at) = c.join_timeout(BOUND).expect("a client hung or died");
                assert!(err.starts_with("Disconnected"), "a client saw {err}");
                ops += n;
                errors += 1;
                slowest = slowest.max(at.saturating_sub(killed_at));
            }
            assert!(matches!(l.len(), Err(Error::Disconnected)));
            assert!(matches!(d.get(&0), Err(Error::Disconnected)));
            drop((clients, d, l, m));
        }
        let mut fds_after = open_fds();
        let settled = eventually(BOUND, || {
            fds_after = open_fds();
            fds_after <= fds_before
        });
        println!(
            "chaos: manager_killed_under_load: seed={seed} rounds={rounds} clients={} ops={ops} \
             disconnected={errors} slowest_to_error_ms={:.1} fds_before={fds_before} fds_after={fds_after}",
            rounds * u64::from(CLIENTS),
            slowest as f64 / 1e6,
        );
        assert_eq!(errors as u64, rounds * u64::from(CLIENTS));
        assert!(
            slowest < 2_000_000_000,
            "a client took {:.1} ms to see the manager's death",
            slowest as f64 / 1e6
        );
        assert!(
            settled,
            "descriptors left: {fds_before} before, {fds_after} after"
        );
    });
}

type Lists = Vec<ListProxy<u8>>;

/// A holder: takes proxies from its pipe, uses them, moves some through `bin` (lent to the
/// manager, taken back from its answers), sends some back, drops others; until its pipe closes
/// (it returns its operation count) or it is killed. A proxy it holds that does not work is a
/// freed live object: it panics.
fn churn((pipe, bin, seed): (Connection<Lists>, ListProxy<ListProxy<u8>>, u64)) -> u64 {
    let mut rng = Rng(seed | 1);
    let mut held: Lists = Vec::new();
    let mut ops = 0u64;
    loop {
        // Everything waiting, so that the lender never blocks on a full pipe.
        let mut wait = Duration::from_millis(2);
        loop {
            match pipe.recv_timeout(wait) {
                Ok(got) => held.extend(got),
                Err(e) if e.is_timeout() => break,
                Err(_) => return ops,
            }
            wait = Duration::ZERO;
        }
        for l in &held {
            l.append(1).unwrap();
            l.len().expect("an object freed under its holder");
            ops += 2;
        }
        match rng.below(4) {
            0 => {
                if let Some(l) = held.pop() {
                    bin.append(l).unwrap();
                    ops += 1;
                }
            }
            1 => match bin.pop() {
                Ok(l) => {
                    l.len().expect("an object from the bin was freed");
                    held.push(l);
                    ops += 2;
                }
                Err(Error::NotFound(_)) => ops += 1,
                Err(e) => panic!("bin: {e}"),
            },
            2 if !held.is_empty() => {
                let k = 1 + rng.below(held.len() as u64) as usize;
                if pipe.send(held.split_off(held.len() - k)).is_err() {
                    return ops;
                }
                ops += 1;
            }
            _ => {}
        }
        if held.len() > 16 {
            held.truncate(8);
        }
    }
}

struct Holder {
    proc: Reaped<u64>,
    pipe: Connection<Lists>,
}

fn start_holder(bin: &ListProxy<ListProxy<u8>>, seed: u64) -> Holder {
    let (ours, theirs) = Pipe::<Lists>::duplex().unwrap();
    let proc = reaped(
        Process::new(churn, (theirs, bin.clone(), seed))
            .start()
            .unwrap(),
    );
    Holder { proc, pipe: ours }
}

/// Reads what a holder sent back: each proxy must work (nothing lost), then is dropped.
fn drain(pipe: &Connection<Lists>, received: &mut u64, lost: &mut u64) -> bool {
    loop {
        match pipe.try_recv() {
            Ok(got) => {
                for l in got {
                    *received += 1;
                    if l.len().is_err() {
                        *lost += 1;
                    }
                }
            }
            Err(Error::Empty) => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn holders_killed_at_random_moments_leak_and_lose_nothing() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    within(BOUND + Duration::from_secs(2 * scale()), || {
        const HOLDERS: usize = 3;
        const SURVIVORS: usize = 16;
        let run = Duration::from_millis(1500 * scale());
        let mut rng = Rng::seeded();
        let seed = rng.0;
        let fds_before = open_fds();
        let m = Manager::start().unwrap();
        // What the parent keeps all along: each list starts with its own marker.
        let survivors: Lists = (0..SURVIVORS)
            .map(|i| m.list_from(vec![i as u8]).unwrap())
            .collect();
        let bin = m.list::<ListProxy<u8>>().unwrap();
        let mut holders: Vec<Holder> = (0..HOLDERS)
            .map(|_| start_holder(&bin, rng.next()))
            .collect();
        let (mut lent, mut received, mut lost, mut kills, mut created) = (0u64, 0, 0, 0u64, 0u64);
        let mut dead: Vec<Connection<Lists>> = Vec::new();
        let started = Instant::now();
        let mut next_kill = Instant::now() + Duration::from_millis(20 + rng.below(80));
        while started.elapsed() < run {
            // Lend: clones of survivors, and fresh objects only the holders will hold.
            let h = &holders[rng.below(HOLDERS as u64) as usize];
            let mut batch: Lists = (0..1 + rng.below(4))
                .map(|_| survivors[rng.below(SURVIVORS as u64) as usize].clone())
                .collect();
            for _ in 0..rng.below(3) {
                batch.push(m.list().unwrap());
                created += 1;
            }
            lent += batch.len() as u64;
            let _ = h.pipe.send(batch); // a holder killed a moment ago: the bytes are gone
            for h in &holders {
                drain(&h.pipe, &mut received, &mut lost);
            }
            dead.retain(|p| drain(p, &mut received, &mut lost));
            if Instant::now() >= next_kill {
                let i = rng.below(HOLDERS as u64) as usize;
                let fresh = start_holder(&bin, rng.next());
                let old = std::mem::replace(&mut holders[i], fresh);
                old.proc.kill().unwrap();
                match old.proc.join_timeout(BOUND) {
                    Err(e) if matches!(e.exit_reason(), Some(ExitReason::Killed { .. })) => {}
                    other => panic!("a holder ended otherwise than killed: {other:?}"),
                }
                kills += 1;
                // What it sent before dying is read (and must work) like the rest.
                dead.push(old.pipe);
                next_kill = Instant::now() + Duration::from_millis(20 + rng.below(80));
            }
            std::thread::sleep(Duration::from_micros(200 + rng.below(800)));
        }
        // The survivors among the holders end cleanly when their pipes close.
        let mut ops = 0;
        for h in holders {
            drop(h.pipe);
            ops += h.proc.join_timeout(BOUND).expect("a holder failed");
        }
        for p in &dead {
            // A dead holder's pipe ends in a disconnect once its messages were read.
            let t = Instant::now();
            while drain(p, &mut received, &mut lost) && t.elapsed() < BOUND {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        drop(dead);
        // What only the bin holds goes with it.
        bin.clear().unwrap();
        drop(bin);
        let mut count = 0;
        let settled = eventually(Duration::from_secs(10), || {
            count = m.object_count().unwrap();
            count == SURVIVORS
        });
        let leaked = count.saturating_sub(SURVIVORS);
        let freed_under_survivor = survivors
            .iter()
            .enumerate()
            .filter(|(i, l)| l.get(0).ok() != Some(*i as u8))
            .count();
        drop((survivors, m));
        let mut fds_after = open_fds();
        let fds_settled = eventually(BOUND, || {
            fds_after = open_fds();
            fds_after <= fds_before
        });
        println!(
            "chaos: holders_killed_at_random: seed={seed} secs={:.1} holders={HOLDERS} kills={kills} \
             lent={lent} created={created} received_back={received} holder_ops={ops} leaked={leaked} \
             lost={lost} freed_under_survivor={freed_under_survivor} fds_before={fds_before} fds_after={fds_after}",
            started.elapsed().as_secs_f64(),
        );
        assert!(kills > 0, "no holder was killed");
        assert!(
            settled,
            "{leaked} objects leaked ({count} counted, {SURVIVORS} held)"
        );
        assert_eq!(lost, 0, "proxies received back that did not work");
        assert_eq!(freed_under_survivor, 0);
        assert!(
            fds_settled,
            "descriptors left: {fds_before} before, {fds_after} after"
        );
    });
}
