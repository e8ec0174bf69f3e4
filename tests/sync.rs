//! Locks, semaphores, events, conditions and barriers across real processes, with holders
//! killed by SIGKILL and every timeout measured.

mod common;

use std::time::{Duration, Instant};

use common::{reaped, BOUND};
use procactor::{
    shared::RawValue, sync::BoundedSemaphore, Barrier, Condition, Error, Event, Lock, Process,
    RLock, Semaphore, StartMethod, Value,
};

procactor::test_support!();

const METHODS: [StartMethod; 3] = [
    StartMethod::Spawn,
    StartMethod::Fork,
    StartMethod::ForkServer,
];

fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}

fn hold_lock((lock, held): (Lock, Event)) {
    let _g = lock.acquire().unwrap();
    held.set();
    park_forever()
}

fn hold_rlock((lock, held): (RLock, Event)) {
    let _a = lock.acquire().unwrap();
    let _b = lock.acquire().unwrap();
    held.set();
    park_forever()
}

fn hold_value((v, held): (Value<u64>, Event)) {
    let mut g = v.lock();
    *g = 7;
    held.set();
    park_forever()
}

fn locked_incr((lock, v, n): (Lock, RawValue<u64>, u32)) {
    for _ in 0..n {
        let _g = lock.acquire().unwrap();
        v.set(v.get() + 1);
    }
}

/// Starts `holder` with `handle` and an event it sets once it holds the lock; returns when it
/// does (the process is killed and reaped when the guard drops).
fn start_holder<A>(holder: fn((A, Event)), handle: A) -> common::Reaped<()>
where
    A: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let held = Event::new().unwrap();
    let p = reaped(
        Process::new(holder, (handle, held.clone()))
            .start()
            .unwrap(),
    );
    held.wait_timeout(BOUND).unwrap();
    p
}

/// Asserts that `took` waited about `asked`: not less, and not unboundedly more.
fn honoured(took: Duration, asked: Duration) {
    assert!(
        took >= asked,
        "returned after {took:?}, before the {asked:?} timeout"
    );
    assert!(
        took < asked + Duration::from_secs(5),
        "returned after {took:?} for {asked:?}"
    );
}

#[test]
fn lock_makes_ten_processes_mutually_exclusive() {
    let lock = Lock::new().unwrap();
    let v = RawValue::new(0u64).unwrap();
    let ps: Vec<_> = (0..10)
        .map(|_| {
            reaped(
                Process::new(locked_incr, (lock.clone(), v.clone(), 500))
                    .start()
                    .unwrap(),
            )
        })
        .collect();
    for p in &ps {
        p.join_timeout(BOUND).unwrap();
    }
    assert_eq!(v.get(), 5000);
    assert!(!lock.is_locked());
}

#[test]
fn lock_whose_holder_is_killed_goes_to_the_next_acquirer() {
    for method in METHODS {
        let lock = Lock::new().unwrap();
        let held = Event::new().unwrap();
        let p = reaped(
            Process::new(hold_lock, (lock.clone(), held.clone()))
                .start_method(method)
                .start()
                .unwrap(),
        );
        held.wait_timeout(BOUND).unwrap();
        assert!(lock.is_locked());
        assert!(lock.try_acquire().is_none());
        p.kill().unwrap();
        let g = lock
            .acquire_timeout(BOUND)
            .unwrap_or_else(|e| panic!("{method:?}: {e}"));
        assert!(g.owner_died(), "{method:?}: not told that the owner died");
        drop(g);
        // Afterwards it is an ordinary lock again.
        let g = lock.acquire_timeout(BOUND).unwrap();
        assert!(!g.owner_died());
    }
}

#[test]
fn waiter_blocked_when_the_holder_is_killed_is_woken() {
    let lock = Lock::new().unwrap();
    let p = start_holder(hold_lock, lock.clone());
    let waiter = {
        let lock = lock.clone();
        std::thread::spawn(move || lock.acquire_timeout(BOUND).map(|g| g.owner_died()))
    };
    std::thread::sleep(Duration::from_millis(50));
    p.kill().unwrap();
    assert!(waiter.join().unwrap().unwrap());
}

#[test]
fn rlock_value_and_condition_locks_survive_a_killed_holder() {
    let rlock = RLock::new().unwrap();
    let p = start_holder(hold_rlock, rlock.clone());
    p.kill().unwrap();
    let g = rlock.acquire_timeout(BOUND).unwrap();
    assert!(g.owner_died());
    assert_eq!(rlock.depth(), 1, "the dead owner's holds are gone");
    drop(g);
    assert!(!rlock.is_locked());

    let v = Value::new(0u64).unwrap();
    let p = start_holder(hold_value, v.clone());
    p.kill().unwrap();
    let g = v.lock_timeout(BOUND).unwrap();
    assert!(g.owner_died());
    assert_eq!(*g, 7);
    drop(g);

    let cond = Condition::new().unwrap();
    let p = start_holder(hold_lock, cond.lock().clone());
    p.kill().unwrap();
    let g = cond.acquire_timeout(BOUND).unwrap();
    assert!(g.owner_died());
}

#[test]
fn a_thread_that_exits_holding_a_lock_releases_it_as_dead() {
    let lock = Lock::new().unwrap();
    let other = lock.clone();
    std::thread::spawn(move || {
        std::mem::forget(other.acquire().unwrap());
        drop(other); // the mapping must outlive the thread: it is on its robust list
    })
    .join()
    .unwrap();
    let g = lock.acquire_timeout(BOUND).unwrap();
    assert!(g.owner_died());
}

#[test]
fn locking_twice_in_one_thread_is_a_deadlock_error() {
    let lock = Lock::new().unwrap();
    let _g = lock.acquire().unwrap();
    assert!(matches!(lock.acquire(), Err(Error::Deadlock(_))));
    assert!(lock.try_acquire().is_none());
}

#[test]
fn lock_timeout_is_honoured_across_processes() {
    let lock = Lock::new().unwrap();
    let _p = start_holder(hold_lock, lock.clone());
    let asked = Duration::from_millis(150);
    let t = Instant::now();
    assert!(matches!(lock.acquire_timeout(asked), Err(Error::Timeout(d)) if d == asked));
    honoured(t.elapsed(), asked);
    let rlock = RLock::new().unwrap();
    let _g = rlock.acquire().unwrap();
    let other = rlock.clone();
    let t = Instant::now();
    let r = std::thread::spawn(move || other.acquire_timeout(asked).is_err())
        .join()
        .unwrap();
    assert!(r);
    honoured(t.elapsed(), asked);
}

fn take_two(sem: Semaphore) {
    sem.acquire().unwrap().forget();
    sem.acquire().unwrap().forget();
}

#[test]
fn semaphore_counts_across_processes() {
    let sem = Semaphore::new(0).unwrap();
    let p = reaped(Process::new(take_two, sem.clone()).start().unwrap());
    sem.release().unwrap();
    sem.release().unwrap();
    p.join_timeout(BOUND).unwrap();
    assert_eq!(sem.value(), 0);
    let asked = Duration::from_millis(100);
    let t = Instant::now();
    assert!(matches!(sem.acquire_timeout(asked), Err(Error::Timeout(_))));
    honoured(t.elapsed(), asked);
    {
        sem.release().unwrap();
        let _permit = sem.acquire().unwrap();
        assert_eq!(sem.value(), 0);
    }
    assert_eq!(sem.value(), 1);
}

#[test]
fn bounded_semaphore_refuses_a_release_past_its_bound() {
    let sem = BoundedSemaphore::new(2).unwrap();
    assert!(matches!(sem.release(), Err(Error::InvalidState(_))));
    sem.acquire().unwrap().forget();
    sem.release().unwrap();
    assert!(sem.release().is_err());
    assert_eq!(sem.value(), 2);
    let empty = BoundedSemaphore::new(0).unwrap();
    assert!(empty.release().is_err());
    assert!(empty.try_acquire().is_none());
}

fn set_later(ev: Event) {
    std::thread::sleep(Duration::from_millis(30));
    ev.set();
}

#[test]
fn event_wakes_waiters_and_honours_timeouts() {
    let ev = Event::new().unwrap();
    let asked = Duration::from_millis(100);
    let t = Instant::now();
    assert!(matches!(ev.wait_timeout(asked), Err(Error::Timeout(_))));
    honoured(t.elapsed(), asked);
    let p = reaped(Process::new(set_later, ev.clone()).start().unwrap());
    ev.wait_timeout(BOUND).unwrap();
    assert!(ev.is_set());
    p.join_timeout(BOUND).unwrap();
    ev.clear();
    assert!(!ev.is_set());
}

fn notify_after((cond, flag): (Condition, RawValue<u32>)) {
    std::thread::sleep(Duration::from_millis(30));
    let _g = cond.acquire().unwrap();
    flag.set(1);
    cond.notify(1);
}

#[test]
fn condition_wait_for_a_change_made_in_another_process() {
    let cond = Condition::new().unwrap();
    let flag = RawValue::new(0u32).unwrap();
    let p = reaped(
        Process::new(notify_after, (cond.clone(), flag.clone()))
            .start()
            .unwrap(),
    );
    let mut g = cond.acquire().unwrap();
    cond.wait_for_timeout(&mut g, || flag.get() == 1, BOUND)
        .unwrap();
    drop(g);
    p.join_timeout(BOUND).unwrap();

    let mut g = cond.acquire().unwrap();
    let asked = Duration::from_millis(100);
    let t = Instant::now();
    let r = cond.wait_for_timeout(&mut g, || false, asked);
    assert!(matches!(r, Err(Error::Timeout(_))));
    honoured(t.elapsed(), asked);
    // The lock is held again after a timeout.
    assert!(cond.lock().is_locked());
    let t = Instant::now();
    assert!(cond.wait_timeout(&mut g, asked).is_err());
    honoured(t.elapsed(), asked);
    // A guard of another lock is refused.
    let other = Lock::new().unwrap();
    let mut og = other.acquire().unwrap();
    assert!(matches!(
        cond.wait_timeout(&mut og, asked),
        Err(Error::InvalidState(_))
    ));
}

fn barrier_party(b: Barrier) -> Result<u32, String> {
    b.wait().map_err(|e| e.to_string())
}

#[test]
fn barrier_releases_all_parties_with_distinct_indexes() {
    let b = Barrier::with_timeout(4, BOUND).unwrap();
    for _round in 0..2 {
        let ps: Vec<_> = (0..3)
            .map(|_| reaped(Process::new(barrier_party, b.clone()).start().unwrap()))
            .collect();
        let mut seen = vec![b.wait().unwrap()];
        for p in &ps {
            seen.push(p.join_timeout(BOUND).unwrap().unwrap());
        }
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 3]);
    }
    assert_eq!(b.n_waiting(), 0);
}

fn die_before_barrier(_: Barrier) {
    std::process::abort();
}

#[test]
fn barrier_with_a_dead_party_breaks_within_the_timeout() {
    let b = Barrier::new(3).unwrap();
    let dead = reaped(Process::new(die_before_barrier, b.clone()).start().unwrap());
    let _ = dead.join_timeout(BOUND);
    let other = reaped(Process::new(barrier_party, b.clone()).start().unwrap());
    let asked = Duration::from_millis(300);
    let t = Instant::now();
    let mine = b.wait_timeout(asked);
    let theirs = other.join_timeout(BOUND).unwrap();
    // One of the two timed out and broke it; the other was told it is broken.
    let broken = |r: &Result<u32, String>| r.as_ref().is_err_and(|e| e.contains("broken"));
    match mine {
        Err(Error::Timeout(_)) => {
            honoured(t.elapsed(), asked);
            assert!(broken(&theirs), "{theirs:?}");
        }
        Err(Error::BrokenBarrier) => assert!(theirs.is_err()),
        other => panic!("{other:?}"),
    }
    assert!(b.is_broken());
    assert!(matches!(b.wait_timeout(asked), Err(Error::BrokenBarrier)));
    b.reset();
    assert!(!b.is_broken());
}

#[test]
fn barrier_abort_wakes_waiters_with_broken_barrier() {
    let b = Barrier::new(2).unwrap();
    let p = reaped(Process::new(barrier_party, b.clone()).start().unwrap());
    assert!(common::eventually(BOUND, || b.n_waiting() == 1));
    b.abort();
    let r = p.join_timeout(BOUND).unwrap();
    assert!(r.is_err_and(|e| e.contains("broken")));
    assert!(matches!(Barrier::new(0), Err(Error::InvalidState(_))));
}

/// The action's counter: a named segment of the test process (the parties' parent).
fn action_counter() -> String {
    let main = procactor::process::parent_process().map_or(std::process::id(), |p| p.pid);
    format!("procactor-test-barrier-action-{main}")
}

fn read_count(shm: &procactor::SharedMemory) -> u32 {
    let mut b = [0u8; 4];
    shm.read(0, &mut b).unwrap();
    u32::from_le_bytes(b)
}

/// The action: counts generations (it runs under the barrier's lock: one at a time).
fn count_generation() {
    let shm = procactor::SharedMemory::open(&action_counter()).unwrap();
    let n = read_count(&shm) + 1;
    shm.write(0, &n.to_le_bytes()).unwrap();
}

/// Waits `rounds` times; after each, what the counter says.
fn action_party((b, rounds): (Barrier, u32)) -> Vec<u32> {
    let shm = procactor::SharedMemory::open(&action_counter()).unwrap();
    (0..rounds)
        .map(|_| {
            b.wait().unwrap();
            read_count(&shm)
        })
        .collect()
}

#[test]
fn a_barrier_action_runs_once_per_generation_before_anyone_goes_on() {
    /// Unlinks the counter however the test ends.
    struct Unlink(procactor::SharedMemory);
    impl Drop for Unlink {
        fn drop(&mut self) {
            let _ = self.0.unlink();
        }
    }
    let _counter = Unlink(procactor::SharedMemory::create(&action_counter(), 4).unwrap());
    let b = Barrier::with_action(3, count_generation).unwrap();
    let ps: Vec<_> = (0..2)
        .map(|_| reaped(Process::new(action_party, (b.clone(), 5)).start().unwrap()))
        .collect();
    let mine = action_party((b.clone(), 5));
    let theirs: Vec<Vec<u32>> = ps
        .into_iter()
        .map(|p| p.join_timeout(BOUND).unwrap())
        .collect();
    // Each party, after each generation, saw it counted: the action ran before the release.
    for seen in theirs.iter().chain([&mine]) {
        assert_eq!(seen, &[1, 2, 3, 4, 5]);
    }
}

fn panicking_action() {
    panic!("the action failed on purpose");
}

fn wait_once(b: Barrier) -> String {
    match b.wait_timeout(BOUND) {
        Ok(_) => "released".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_panicking_barrier_action_breaks_the_barrier_for_everyone() {
    let b = Barrier::with_action(2, panicking_action).unwrap();
    let p = reaped(Process::new(wait_once, b.clone()).start().unwrap());
    let mine = wait_once(b.clone());
    let theirs = p.join_timeout(BOUND).unwrap();
    let (acted, other) = if mine.contains("action") {
        (mine, theirs)
    } else {
        (theirs, mine)
    };
    assert!(acted.contains("on purpose"), "{acted}");
    assert!(other.contains("broken"), "{other}");
    assert!(b.is_broken());
    b.reset();
    assert!(!b.is_broken());
}
