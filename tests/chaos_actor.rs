//! Chaos for actors: an actor SIGKILLed under load from callers in other processes and in this
//! one, and callers SIGKILLed at random moments while they tell and ask. Each scenario prints one
//! line `chaos: <scenario>: key=value ...` and asserts its invariants.
//!
//! `PROCACTOR_CHAOS_SCALE` (default 1) multiplies the rounds: 1 takes a few seconds in a debug
//! build; CI runs 10 in release
//! (`PROCACTOR_CHAOS_SCALE=10 cargo test --release --test 'chaos_*' -- --nocapture --test-threads=1`).

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{child_pids, eventually, open_fds, reaped, Reaped, BOUND};
use procactor::{ActorRef, Error, ExitReason, Process};

procactor::test_support!();

/// The scenarios count this process's descriptors and children: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn scale() -> u64 {
    std::env::var("PROCACTOR_CHAOS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

/// Runs `f` on a thread and fails the test if it takes longer than `limit`: a hung scenario is a
/// failed one.
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

/// Counts what it is told, and says how much.
pub struct Tally {
    total: u64,
}

#[procactor::actor]
impl Tally {
    fn init(_: ()) -> Self {
        Tally { total: 0 }
    }

    pub fn add(&mut self, k: u64) {
        self.total += k;
    }

    pub fn add_and_get(&mut self, k: u64) -> u64 {
        self.total += k;
        self.total
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

/// What a client saw: asks answered, the error that ended it, and when (CLOCK_MONOTONIC).
type Outcome = (u64, String, u64);

/// Tells and asks in a loop until one fails (the actor's death).
fn load_until_error(t: ActorRef<Tally>) -> Outcome {
    let mut answered = 0;
    loop {
        let step = t.cast().add(1).and_then(|()| t.add_and_get(1));
        match step {
            Ok(_) => answered += 1,
            Err(e) => return (answered, format!("{e:?}"), now_ns()),
        }
    }
}

/// The actor is SIGKILLed while four processes and two threads of this one tell and ask it as
/// fast as they can: every one of them gets `ActorDied` (never a hang, never another error),
/// promptly; nothing is left behind.
#[test]
fn an_actor_killed_under_load_fails_every_caller_promptly() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    within(BOUND + Duration::from_secs(5 * scale()), || {
        const PROCESSES: usize = 4;
        const THREADS: usize = 2;
        let rounds = 3 * scale();
        let mut rng = Rng::seeded();
        let seed = rng.0;
        // The first actor opens what this process keeps for good (its flusher, its log channel).
        {
            let t = procactor::spawn::<Tally>(()).unwrap();
            t.total().unwrap();
            t.kill().unwrap();
            t.join_timeout(BOUND).unwrap();
        }
        let fds_before = open_fds();
        let children_before = child_pids();
        let (mut answered, mut slowest, mut died) = (0u64, 0u64, 0usize);
        for _ in 0..rounds {
            let t = procactor::spawn::<Tally>(()).unwrap();
            let processes: Vec<Reaped<Outcome>> = (0..PROCESSES)
                .map(|_| reaped(Process::new(load_until_error, t.clone()).start().unwrap()))
                .collect();
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    let t = t.clone();
                    std::thread::spawn(move || load_until_error(t))
                })
                .collect();
            // Under load: the callers have made progress.
            assert!(eventually(BOUND, || t.total().unwrap_or(0) >= 200));
            std::thread::sleep(Duration::from_millis(rng.below(50)));
            let killed_at = now_ns();
            t.kill().unwrap();
            let outcomes = processes
                .iter()
                .map(|p| {
                    p.join_timeout(BOUND)
                        .expect("a caller process hung or died")
                })
                .chain(threads.into_iter().map(|h| h.join().unwrap()));
            for (n, err, at) in outcomes {
                assert!(err.starts_with("ActorDied"), "a caller saw {err}");
                answered += n;
                died += 1;
                slowest = slowest.max(at.saturating_sub(killed_at));
            }
            assert!(matches!(t.total(), Err(Error::ActorDied { .. })));
            assert_eq!(
                t.join_timeout(BOUND).unwrap(),
                ExitReason::Killed {
                    signal: libc::SIGKILL
                }
            );
            drop((processes, t));
        }
        let mut fds_after = open_fds();
        let fds_settled = eventually(BOUND, || {
            fds_after = open_fds();
            fds_after <= fds_before
        });
        let mut zombies = 0;
        let reaped = eventually(BOUND, || {
            zombies = child_pids()
                .iter()
                .filter(|p| !children_before.contains(p))
                .count();
            zombies == 0
        });
        println!(
            "chaos: actor_killed_under_load: seed={seed} rounds={rounds} callers={} answered={answered} \
             actor_died={died} slowest_to_error_ms={:.1} fds_before={fds_before} fds_after={fds_after} \
             children_left={zombies}",
            rounds as usize * (PROCESSES + THREADS),
            slowest as f64 / 1e6,
        );
        assert_eq!(died, rounds as usize * (PROCESSES + THREADS));
        assert!(
            slowest < 2_000_000_000,
            "a caller took {:.1} ms to see the actor's death",
            slowest as f64 / 1e6
        );
        assert!(
            fds_settled,
            "descriptors left: {fds_before} before, {fds_after} after"
        );
        assert!(reaped, "{zombies} children left");
    });
}

/// Tells `n` ones (and, every 100, an ask), then returns `n`.
fn tell_ones((t, n): (ActorRef<Tally>, u64)) -> u64 {
    for i in 0..n {
        t.cast().add(1).unwrap();
        if i % 100 == 99 {
            t.total().unwrap();
        }
    }
    n
}

/// The resident memory (KiB) and descriptors of a process.
fn rss_and_fds(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (rss, fds)
}

/// Callers in other processes tell and ask one actor; some are SIGKILLed at random moments. The
/// actor goes on serving: what a caller that returned told is all counted (it returned, so its
/// tells were handled), a killed caller's count is between what it had surely sent and all of
/// it, the actor answers promptly throughout, and its descriptors and memory come back.
#[test]
fn callers_killed_at_random_moments_do_not_hurt_the_actor() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    within(BOUND + Duration::from_secs(10 * scale()), || {
        const CALLERS: usize = 4;
        const TELLS: u64 = 5_000;
        let rounds = 4 * scale();
        let mut rng = Rng::seeded();
        let seed = rng.0;
        let t = procactor::spawn::<Tally>(()).unwrap();
        t.total().unwrap();
        let (rss_before, fds_before) = rss_and_fds(t.pid());
        let (mut returned, mut killed, mut slowest_ask) = (0u64, 0u64, Duration::ZERO);
        let mut surely = 0u64; // told by callers that returned
        let mut at_most = 0u64; // told by every caller, had it gone on
        for _ in 0..rounds {
            let callers: Vec<Reaped<u64>> = (0..CALLERS)
                .map(|_| reaped(Process::new(tell_ones, (t.clone(), TELLS)).start().unwrap()))
                .collect();
            at_most += CALLERS as u64 * TELLS;
            // Half of them killed at random moments, the actor asked meanwhile.
            for c in callers.iter().take(CALLERS / 2) {
                std::thread::sleep(Duration::from_millis(rng.below(40)));
                let asked = std::time::Instant::now();
                t.timeout(BOUND).total().unwrap();
                slowest_ask = slowest_ask.max(asked.elapsed());
                c.kill().unwrap();
            }
            for c in &callers {
                match c.join_timeout(BOUND) {
                    Ok(n) => {
                        surely += n;
                        returned += 1;
                    }
                    Err(e) if matches!(e.exit_reason(), Some(ExitReason::Killed { .. })) => {
                        killed += 1
                    }
                    Err(e) => panic!("a caller ended with {e:?}"),
                }
            }
        }
        let total = t.timeout(BOUND).total().unwrap();
        let mut after = rss_and_fds(t.pid());
        let fds_back = eventually(BOUND, || {
            after = rss_and_fds(t.pid());
            after.1 <= fds_before
        });
        println!(
            "chaos: callers_killed_at_random_moments: seed={seed} rounds={rounds} callers={} \
             returned={returned} killed={killed} counted={total} surely={surely} at_most={at_most} \
             slowest_ask_ms={:.1} actor_rss_kib_before={rss_before} actor_rss_kib_after={} \
             actor_fds_before={fds_before} actor_fds_after={}",
            rounds as usize * CALLERS,
            slowest_ask.as_secs_f64() * 1e3,
            after.0,
            after.1,
        );
        assert!(
            (surely..=at_most).contains(&total),
            "counted {total}: callers that returned told {surely}, all could have told {at_most}"
        );
        assert!(
            slowest_ask < Duration::from_secs(2),
            "an ask took {slowest_ask:?}"
        );
        assert!(
            fds_back,
            "the actor keeps descriptors: {fds_before} before, {} after",
            after.1
        );
        // A killed caller's half-sent batch or connection costs the actor nothing for good.
        assert!(
            after.0 < rss_before + 64 * 1024,
            "the actor grew from {rss_before} KiB to {} KiB",
            after.0
        );
        t.kill().unwrap();
        let _ = t.join_timeout(BOUND);
    });
}
