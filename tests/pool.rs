//! Pool: results in order, panics, workers killed mid-map, mid-imap and mid-apply_async,
//! deadlines, initializers that fail, results that cannot be encoded, terminate with a long
//! queue, and no process left behind.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bounded, eventually, pid_alive, BOUND};
use procactor::{Error, Pool, Queue, StartMethod, Value};

procactor::test_support!();

fn square(x: u64) -> u64 {
    x * x
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn picky(x: u32) -> u32 {
    assert!(x % 10 != 7, "seven is not allowed");
    x
}

/// SIGKILLs its own worker on 13 (the OOM killer, in a test).
fn die_on_13(x: u32) -> u32 {
    if x == 13 {
        // SAFETY: raising a signal on ourselves has no preconditions.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    x
}

fn pid_of(_: u32) -> u32 {
    std::process::id()
}

#[test]
fn map_keeps_order_for_every_chunking() {
    let pool = Arc::new(Pool::new(2).unwrap());
    let p = pool.clone();
    bounded(move || {
        let expected: Vec<u64> = (0..1000).map(|x| x * x).collect();
        assert_eq!(p.map(square, 0..1000).unwrap(), expected);
        for chunk in [1, 3, 64, 1000, 5000] {
            assert_eq!(p.map_chunked(square, 0..1000, chunk).unwrap(), expected);
        }
        assert!(p.map(square, Vec::new()).unwrap().is_empty());
        assert_eq!(
            p.starmap(|a: u32, b: u32| a * b, [(2, 3), (4, 5)]).unwrap(),
            [6, 20]
        );
        let pairs: Vec<(u32, u32)> = (0..500).map(|i| (i, i + 1)).collect();
        let r = p.starmap_async(|a: u32, b: u32| a * b, pairs).unwrap();
        let expected: Vec<u32> = (0..500).map(|i| i * (i + 1)).collect();
        assert_eq!(r.get().unwrap(), expected);
        // A failing item: the async result reports it.
        let r = p
            .starmap_async(
                |a: u32, b: u32| a.checked_div(b).expect("divided by 0"),
                [(4, 2), (1, 0)],
            )
            .unwrap();
        assert!(matches!(r.get(), Err(Error::TaskPanicked { index: 1, .. })));
        assert!(!r.successful().unwrap());
        let unordered: Vec<(usize, u64)> = p
            .imap_unordered(square, 0..100)
            .unwrap()
            .map(|(i, r)| (i, r.unwrap()))
            .collect();
        assert_eq!(unordered.len(), 100);
        assert!(unordered.iter().all(|&(i, r)| r == (i as u64).pow(2)));
    });
}

#[test]
fn new_zero_and_bad_options_are_errors() {
    assert!(matches!(Pool::new(0), Err(Error::InvalidState(_))));
    assert!(Pool::builder()
        .processes(1)
        .max_tasks_per_child(0)
        .build()
        .is_err());
    assert!(Pool::builder()
        .processes(1)
        .task_timeout(Duration::ZERO)
        .build()
        .is_err());
}

#[test]
fn a_panicking_task_fails_alone_and_the_pool_goes_on() {
    let pool = Arc::new(Pool::new(2).unwrap());
    let p = pool.clone();
    bounded(move || {
        match p.map(picky, 0..30) {
            Err(Error::TaskPanicked { index, panic, .. }) => {
                assert_eq!(index, 7, "the first failing item by position");
                assert_eq!(panic.message, "seven is not allowed");
                assert!(panic.location.unwrap().contains("pool.rs"));
            }
            other => panic!("unexpected: {other:?}"),
        }
        let all = p.try_map(picky, 0..30).unwrap();
        for (i, r) in all.iter().enumerate() {
            match (i % 10, r) {
                (7, Err(Error::TaskPanicked { index, .. })) => assert_eq!(*index, i),
                (7, other) => panic!("item {i}: {other:?}"),
                (_, r) => assert_eq!(*r.as_ref().unwrap(), i as u32),
            }
        }
        assert_eq!(p.apply(picky, 1).unwrap(), 1);
        assert!(matches!(
            p.apply(picky, 7),
            Err(Error::TaskPanicked { index: 0, .. })
        ));
    });
}

#[test]
fn a_worker_killed_mid_map_costs_one_item() {
    let pool = Arc::new(Pool::new(2).unwrap());
    let before = pool.pids();
    let p = pool.clone();
    bounded(move || {
        // Chunks of 5: the items of the dead worker's chunk around 13 still complete.
        let r = p.map_async(die_on_13, 0..40).unwrap();
        match r.get() {
            Err(Error::WorkerLost {
                index, pid, signal, ..
            }) => {
                assert_eq!(index, 13);
                assert_eq!(signal, Some(libc::SIGKILL));
                assert!(!pid_alive(pid));
            }
            other => panic!("unexpected: {other:?}"),
        }
        let all = p.try_map(die_on_13, 0..40).unwrap();
        for (i, r) in all.iter().enumerate() {
            if i == 13 {
                assert!(
                    matches!(r, Err(Error::WorkerLost { index: 13, .. })),
                    "{r:?}"
                );
            } else {
                assert_eq!(*r.as_ref().unwrap(), i as u32);
            }
        }
        assert_eq!(p.map(square, 0..10).unwrap()[9], 81);
    });
    let after = pool.pids();
    assert_eq!(after.len(), 2);
    assert_ne!(before, after, "dead workers were replaced");
}

#[test]
fn a_worker_killed_mid_imap_costs_one_item() {
    let pool = Arc::new(Pool::new(2).unwrap());
    let p = pool.clone();
    let results = bounded(move || {
        let it = p.imap(nap, vec![150u64; 8]).unwrap();
        let victim = p.pids()[0];
        std::thread::sleep(Duration::from_millis(60));
        // SAFETY: signalling a pid we started.
        unsafe { libc::kill(victim as i32, libc::SIGKILL) };
        (victim, it.collect::<Vec<_>>())
    });
    let (victim, results) = results;
    let lost: Vec<_> = results
        .iter()
        .filter(
            |r| matches!(r, Err(Error::WorkerLost { pid, signal: Some(9), .. }) if *pid == victim),
        )
        .collect();
    assert_eq!(lost.len(), 1, "{results:?}");
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 7);
    assert!(!pool.pids().contains(&victim));
}

#[test]
fn a_worker_killed_mid_apply_async_and_one_that_exits() {
    let pool = Arc::new(Pool::new(2).unwrap());
    let p = pool.clone();
    bounded(move || {
        let many: Vec<_> = (0..50)
            .map(|i| p.apply_async(die_on_13, i).unwrap())
            .collect();
        for (i, r) in many.iter().enumerate() {
            match r.get() {
                Ok(v) => assert_eq!(v, i as u32),
                Err(Error::WorkerLost { index: 0, .. }) => assert_eq!(i, 13),
                Err(e) => panic!("item {i}: {e}"),
            }
        }
        fn exits(code: i32) -> i32 {
            std::process::exit(code)
        }
        match p.apply(exits, 3) {
            Err(Error::WorkerLost { code, signal, .. }) => {
                assert_eq!((code, signal), (Some(3), None));
            }
            other => panic!("unexpected: {other:?}"),
        }
        assert_eq!(p.apply(square, 3).unwrap(), 9);
    });
}

#[test]
fn a_task_past_its_deadline_has_its_worker_killed() {
    let pool = Arc::new(
        Pool::builder()
            .processes(2)
            .task_timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    let p = pool.clone();
    bounded(move || {
        let t = Instant::now();
        let results = p.try_map(nap, [10, 60_000, 10, 20]).unwrap();
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(matches!(results[1], Err(Error::Timeout(d)) if d == Duration::from_millis(300)));
        assert_eq!(results[0].as_ref().unwrap(), &10);
        assert_eq!(results[3].as_ref().unwrap(), &20);
        assert_eq!(p.apply(nap, 5).unwrap(), 5);
    });
    assert_eq!(pool.pids().len(), 2);
}

fn refuse(why: String) {
    panic!("{why}")
}

/// Builds a pool whose initializer panics; returns the error and the children left alive (run
/// in a process of its own, whose children are only this pool's).
fn failing_pool(_: ()) -> (String, Option<String>, Vec<u32>) {
    let err = Pool::builder()
        .processes(2)
        .initializer(refuse, "no database".to_string())
        .build()
        .unwrap_err();
    let left = common::child_pids()
        .into_iter()
        .filter(|&p| pid_alive(p))
        .collect();
    match err {
        Error::InitializerFailed { panic, .. } => (panic.message, panic.location, left),
        other => panic!("unexpected: {other:?}"),
    }
}

#[test]
fn a_panicking_initializer_is_a_clear_error() {
    let p = common::reaped(procactor::Process::new(failing_pool, ()).start().unwrap());
    let (message, location, left) = p.join_timeout(BOUND).unwrap();
    assert_eq!(message, "no database");
    assert!(location.unwrap().contains("pool.rs"));
    assert!(left.is_empty(), "workers left behind: {left:?}");
}

/// Counts its calls; refuses to initialize after the first `ok`.
fn init_counted((count, ok): (Value<u32>, u32)) {
    let n = {
        let mut c = count.lock();
        *c += 1;
        *c
    };
    assert!(n <= ok, "initializer #{n} refused");
}

#[test]
fn a_replacement_whose_initializer_fails_breaks_the_pool_without_a_restart_loop() {
    let count = Value::new(0u32).unwrap();
    let pool = Arc::new(
        Pool::builder()
            .processes(2)
            .initializer(init_counted, (count.clone(), 2))
            .build()
            .unwrap(),
    );
    assert_eq!(count.get(), 2);
    let p = pool.clone();
    bounded(move || {
        assert!(matches!(
            p.apply(die_on_13, 13),
            Err(Error::WorkerLost { .. })
        ));
        // The replacement's initializer panics: from then on, every task fails with it.
        assert!(eventually(BOUND, || matches!(
            p.apply(square, 2),
            Err(Error::InitializerFailed { .. })
        )));
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count.get(), 3, "one replacement, no restart loop");
}

#[derive(Debug)]
struct Unencodable;

impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be encoded",
        ))
    }
}

impl<'de> serde::Deserialize<'de> for Unencodable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|_| Unencodable)
    }
}

fn make_unencodable(_: ()) -> Unencodable {
    Unencodable
}

/// Decodes as garbage in the worker.
#[derive(Debug, serde::Serialize)]
struct Garbage(u8);

impl<'de> serde::Deserialize<'de> for Garbage {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("garbage"))
    }
}

fn take_garbage(_: Garbage) -> u8 {
    0
}

#[test]
fn a_result_that_cannot_be_encoded_or_an_argument_that_cannot_be_decoded_fails_its_task() {
    let pool = Arc::new(Pool::new(1).unwrap());
    let p = pool.clone();
    bounded(move || {
        match p.apply(make_unencodable, ()) {
            Err(Error::Encode { type_name, reason }) => {
                assert!(type_name.ends_with("Unencodable"), "{type_name}");
                assert!(reason.contains("Serialize"), "{reason}");
            }
            other => panic!("unexpected: {other:?}"),
        }
        assert!(matches!(
            p.apply(take_garbage, Garbage(1)),
            Err(Error::Decode { .. })
        ));
        assert_eq!(p.apply(square, 4).unwrap(), 16);
    });
}

#[test]
fn terminate_with_ten_thousand_long_tasks_queued_returns_promptly() {
    let pool = Pool::new(2).unwrap();
    let pids = pool.pids();
    let r = pool.map_async(nap, vec![60_000u64; 10_000]).unwrap();
    let single = pool.apply_async(nap, 60_000).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    pool.terminate();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(matches!(r.get_timeout(BOUND), Err(Error::Cancelled)));
    assert!(matches!(single.get_timeout(BOUND), Err(Error::Cancelled)));
    assert!(pids.iter().all(|&p| !pid_alive(p)), "workers left behind");
    assert!(pool.pids().is_empty());
    assert!(matches!(pool.apply(square, 1), Err(Error::Closed)));
}

#[test]
fn drop_terminates_and_reaps() {
    let pool = Pool::new(2).unwrap();
    let pids = pool.pids();
    let _r = pool.apply_async(nap, 60_000).unwrap();
    drop(pool);
    assert!(pids.iter().all(|&p| !pid_alive(p)), "workers left behind");
}

#[test]
fn close_then_join_finishes_the_work_in_hand() {
    let pool = Arc::new(Pool::new(2).unwrap());
    let p = pool.clone();
    bounded(move || {
        assert!(matches!(p.join(), Err(Error::InvalidState(_))));
        let r = p.map_async(nap, [50, 50, 50]).unwrap();
        let pids = p.pids();
        p.close();
        assert!(matches!(p.apply(square, 1), Err(Error::Closed)));
        p.join().unwrap();
        assert_eq!(r.get().unwrap(), [50, 50, 50]);
        assert!(pids.iter().all(|&p| !pid_alive(p)));
    });
}

#[test]
fn max_tasks_per_child_replaces_workers() {
    let pool = Arc::new(
        Pool::builder()
            .processes(2)
            .max_tasks_per_child(3)
            .build()
            .unwrap(),
    );
    let p = pool.clone();
    bounded(move || {
        let pids = p.map_chunked(pid_of, 0..30, 1).unwrap();
        let mut distinct = pids.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() >= 10,
            "{} workers for 30 tasks",
            distinct.len()
        );
        for pid in distinct {
            assert!(pids.iter().filter(|&&p| p == pid).count() <= 3);
        }
    });
}

#[test]
fn imap_yields_before_the_last_task_is_done() {
    let pool = Arc::new(Pool::new(2).unwrap());
    let p = pool.clone();
    bounded(move || {
        let t = Instant::now();
        let mut it = p.imap(nap, [10, 10, 10, 10, 1_500]).unwrap();
        assert_eq!(it.next().unwrap().unwrap(), 10);
        assert!(
            t.elapsed() < Duration::from_millis(1_000),
            "{:?}",
            t.elapsed()
        );
        assert!(it.next_timeout(Duration::from_secs(20)).unwrap().is_ok());
        let rest: Vec<u64> = it.map(|r| r.unwrap()).collect();
        assert_eq!(rest, [10, 10, 1_500]);
    });
}

#[test]
fn uneven_tasks_do_not_leave_a_worker_idle() {
    let pool = Arc::new(Pool::new(2).unwrap());
    let p = pool.clone();
    bounded(move || {
        // One long task and 20 short ones: the other worker takes all the short ones.
        let mut work = vec![1_000u64];
        work.extend([50u64; 20]);
        let t = Instant::now();
        assert_eq!(p.map_chunked(nap, work, 1).unwrap().len(), 21);
        let took = t.elapsed();
        assert!(took < Duration::from_millis(1_600), "took {took:?}");
    });
}

fn put_twice((q, x): (Queue<u64>, u64)) -> u64 {
    q.put(x).unwrap();
    q.put(x + 1).unwrap();
    x
}

#[test]
fn handles_travel_in_task_arguments() {
    let pool = Arc::new(
        Pool::builder()
            .processes(2)
            .start_method(StartMethod::Fork)
            .build()
            .unwrap(),
    );
    let q = Queue::<u64>::new().unwrap();
    let items: Vec<(Queue<u64>, u64)> = (0..10).map(|i| (q.clone(), i * 10)).collect();
    let p = pool.clone();
    bounded(move || {
        assert_eq!(p.map(put_twice, items).unwrap().len(), 10);
        assert_eq!(p.apply(put_twice, (q.clone(), 1000)).unwrap(), 1000);
        let mut got: Vec<u64> = (0..22).map(|_| q.get_timeout(BOUND).unwrap()).collect();
        got.sort();
        assert_eq!(got[0..2], [0, 1]);
        assert_eq!(got[20..], [1000, 1001]);
    });
}

#[test]
fn pool_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Pool>();
    check::<procactor::pool::AsyncResult<u32>>();
    check::<procactor::Executor>();
    check::<procactor::pool::Future<u32>>();
    check::<procactor::pool::Imap<'static, u32>>();
    check::<procactor::pool::ImapUnordered<'static, u32>>();
}

fn put_once((q, x): (Queue<u64>, u64)) -> u64 {
    std::thread::sleep(Duration::from_micros(x % 7 * 300));
    q.put(x).unwrap();
    x
}

#[test]
fn every_task_runs_exactly_once_while_idle_workers_take_back_queued_batches() {
    let pool = Arc::new(Pool::new(3).unwrap());
    let q = Queue::<u64>::new().unwrap();
    let p = pool.clone();
    bounded(move || {
        for round in 0..5u64 {
            let items: Vec<(Queue<u64>, u64)> =
                (0..60).map(|i| (q.clone(), round * 100 + i)).collect();
            let chunk = 1 + round as usize * 3;
            assert_eq!(p.map_chunked(put_once, items, chunk).unwrap().len(), 60);
            let mut got: Vec<u64> = (0..60).map(|_| q.get_timeout(BOUND).unwrap()).collect();
            got.sort();
            let want: Vec<u64> = (0..60).map(|i| round * 100 + i).collect();
            assert_eq!(got, want, "round {round}: a task ran twice or not at all");
            assert!(q.try_get().is_err(), "round {round}: a task ran twice");
        }
    });
}

/// Decodes as garbage in the worker when it holds 3.
#[derive(Debug, serde::Serialize)]
struct BadAtThree(u8);

impl<'de> serde::Deserialize<'de> for BadAtThree {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u8::deserialize(d)? {
            3 => Err(serde::de::Error::custom("three is garbage")),
            v => Ok(BadAtThree(v)),
        }
    }
}

fn take_bad_at_three(b: BadAtThree) -> u8 {
    b.0
}

#[test]
fn an_undecodable_item_in_a_chunk_fails_alone() {
    let pool = Arc::new(Pool::new(1).unwrap());
    let p = pool.clone();
    bounded(move || {
        let items: Vec<BadAtThree> = (0..6).map(BadAtThree).collect();
        let job = p.map_async(take_bad_at_three, items).unwrap();
        match job.get() {
            Err(Error::Decode { reason, .. }) => assert!(reason.contains("task #3"), "{reason}"),
            other => panic!("unexpected: {other:?}"),
        }
        // 20 items, one worker: chunks of ceil(20 / 4) = 5. Every item of a chunk is found by
        // its length: in the chunk 0..5, only 3 fails, and 4 (after it) is fine.
        let items: Vec<BadAtThree> = (0..20).map(BadAtThree).collect();
        let all = p.try_map(take_bad_at_three, items).unwrap();
        for (i, r) in all.iter().enumerate() {
            if i == 3 {
                assert!(matches!(r, Err(Error::Decode { .. })), "item {i}: {r:?}");
            } else {
                assert_eq!(*r.as_ref().unwrap(), i as u8);
            }
        }
        assert_eq!(p.apply(take_bad_at_three, BadAtThree(9)).unwrap(), 9);
    });
}

/// CPU time (user + system, in clock ticks) a process has used, from /proc/PID/stat.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // After the name: state is field 3, utime 14 and stime 15 (1-based, as in proc(5)).
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn idle_workers_poll_for_a_bounded_time_then_sleep() {
    for spin in [Duration::ZERO, Duration::from_millis(100)] {
        let pool = Arc::new(
            Pool::builder()
                .processes(2)
                .idle_spin(spin)
                .build()
                .unwrap(),
        );
        let p = pool.clone();
        bounded(move || assert_eq!(p.map(square, 0..1000).unwrap()[999], 998_001));
        // Past the spin, the workers sleep: no CPU time over half a second (a tick is 10 ms;
        // a worker that kept polling would use about 50).
        std::thread::sleep(spin + Duration::from_millis(200));
        let before: Vec<u64> = pool.pids().iter().map(|&p| cpu_ticks(p)).collect();
        std::thread::sleep(Duration::from_millis(500));
        let after: Vec<u64> = pool.pids().iter().map(|&p| cpu_ticks(p)).collect();
        for (b, a) in before.iter().zip(&after) {
            assert!(
                a - b <= 2,
                "an idle worker used {} ticks (spin {spin:?})",
                a - b
            );
        }
        // And they still take work at once.
        let p = pool.clone();
        bounded(move || assert_eq!(p.apply(square, 9).unwrap(), 81));
    }
}

fn inc(x: u64) -> u64 {
    x + 1
}

/// Blocks its worker until `ev` is set.
fn held(ev: procactor::Event) -> u64 {
    ev.wait().unwrap();
    0
}

/// Sets its event when dropped: a failing test releases the worker it holds.
struct SetOnDrop(procactor::Event);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// Issue 14, defect 1: 5,000 cheap tasks queued behind a busy worker go out in the largest
/// batches the pool makes, 1,024 tasks (once it has measured that they are cheap: in a release
/// build). Such a batch used to fail to send (more parts than the kernel's UIO_MAXIOV), the
/// worker was never marked ready again, and everything hung, dropping the pool too.
#[test]
fn thousands_of_queued_tasks_on_one_worker_all_complete() {
    bounded(|| {
        let pool = Pool::new(1).unwrap();
        for round in 0..3 {
            let ev = procactor::Event::new().unwrap();
            let _release = SetOnDrop(ev.clone());
            let busy = pool.apply_async(held, ev.clone()).unwrap();
            let pending: Vec<_> = (0..5_000u64)
                .map(|i| pool.apply_async(inc, i).unwrap())
                .collect();
            ev.set();
            assert_eq!(busy.get_timeout(BOUND).unwrap(), 0);
            for (i, r) in pending.iter().enumerate() {
                assert_eq!(r.get_timeout(BOUND).unwrap(), i as u64 + 1, "round {round}");
            }
        }
        drop(pool);
    });
}

fn byte_len(v: Vec<u8>) -> usize {
    v.len()
}

/// Fills every free descriptor number under a tight limit, then asks for a task whose batch
/// travels in a memory file (over 64 KiB): the send fails with EMFILE, on a worker that is
/// fine. Returns that task's outcome, and the same task's once descriptors are free again.
fn send_without_descriptors(_: ()) -> (String, usize) {
    let pool = Pool::new(1).unwrap();
    // A first task through the same path: the pool thread has its descriptors (its epoll is
    // made when it starts) before they run out.
    assert_eq!(pool.apply(byte_len, vec![0u8; 100_000]).unwrap(), 100_000);
    let highest = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with valid structs.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) };
    let tight = libc::rlimit {
        rlim_cur: highest + 1,
        rlim_max: old.rlim_max,
    };
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &tight) };
    let mut fillers = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        fillers.push(f);
    }
    let failed = pool.apply(byte_len, vec![0u8; 100_000]);
    drop(fillers);
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) };
    let again = pool.apply(byte_len, vec![0u8; 100_000]).unwrap();
    (format!("{failed:?}"), again)
}

/// Issue 14, defect 1: a send that fails on a live worker (here for want of a descriptor) used
/// to be taken for a dying worker: the worker was never marked ready again, and the task was
/// queued again for ever. It fails with the error; the worker takes the next task.
#[test]
fn a_batch_that_cannot_be_sent_fails_its_tasks_and_the_worker_goes_on() {
    let p = common::reaped(
        procactor::Process::new(send_without_descriptors, ())
            .start()
            .unwrap(),
    );
    let (failed, again) = p.join_timeout(BOUND).unwrap();
    assert!(
        failed.contains("Io") && failed.contains("memfd"),
        "{failed}"
    );
    assert_eq!(again, 100_000);
}

/// What `Fatal`'s `Deserialize` does, in the worker, for these values.
const PANIC: u8 = 201;
const EXIT: u8 = 202;
const ABORT: u8 = 203;

/// An argument whose `Deserialize` panics, calls `exit(3)` or aborts for some values: a task
/// that kills its worker while its argument is decoded (issue 14, defect 2).
#[derive(Debug, serde::Serialize)]
struct Fatal(u8);

impl<'de> serde::Deserialize<'de> for Fatal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u8::deserialize(d)? {
            PANIC => panic!("refuses to decode"),
            EXIT => std::process::exit(3),
            ABORT => std::process::abort(),
            v => Ok(Fatal(v)),
        }
    }
}

fn take_fatal(f: Fatal) -> u8 {
    f.0
}

/// Counts the workers started; no core files from the aborts.
fn count_starts(starts: Value<u32>) {
    *starts.lock() += 1;
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit with a valid struct.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
}

fn assert_fatal_outcome(v: u8, r: &Result<u8, Error>, index: usize) {
    match (v, r) {
        (PANIC, Err(Error::Decode { reason, .. })) => {
            assert!(reason.contains("refuses to decode"), "{reason}");
            assert!(reason.contains(&format!("task #{index}")), "{reason}");
        }
        (
            EXIT,
            Err(Error::WorkerLost {
                index: i,
                code,
                signal,
                ..
            }),
        ) => {
            assert_eq!((*i, *code, *signal), (index, Some(3), None));
        }
        (
            ABORT,
            Err(Error::WorkerLost {
                index: i, signal, ..
            }),
        ) => {
            assert_eq!((*i, *signal), (index, Some(libc::SIGABRT)));
        }
        (v, Ok(got)) if v < PANIC => assert_eq!(*got, v),
        (v, other) => panic!("item {index} ({v}): {other:?}"),
    }
}

#[test]
fn a_task_that_kills_its_worker_while_its_argument_is_decoded_fails_alone() {
    let starts = Value::new(0u32).unwrap();
    // One worker: every replacement must have started (and counted) before the next result.
    let pool = Pool::builder()
        .processes(1)
        .initializer(count_starts, starts.clone())
        .build()
        .unwrap();
    bounded(move || {
        for v in [PANIC, EXIT, ABORT] {
            let r = pool.apply_async(take_fatal, Fatal(v)).unwrap();
            assert_fatal_outcome(v, &r.get_timeout(BOUND), 0);
        }
        // In map chunks (40 items on one worker: chunks of 10), with good items around each.
        let values: Vec<u8> = (0..40u8)
            .map(|i| match i {
                7 => PANIC,
                18 => EXIT,
                29 => ABORT,
                i => i,
            })
            .collect();
        let r = pool
            .map_async(take_fatal, values.iter().map(|&v| Fatal(v)))
            .unwrap();
        assert!(r.wait_timeout(BOUND), "the map never finished");
        let all = pool
            .try_map(take_fatal, values.iter().map(|&v| Fatal(v)))
            .unwrap();
        for (i, (v, r)) in values.iter().zip(&all).enumerate() {
            assert_fatal_outcome(*v, r, i);
        }
        assert_eq!(pool.apply(take_fatal, Fatal(5)).unwrap(), 5);
        // One replacement per death: the first worker, two for the applies, two per map.
        assert_eq!(starts.get(), 1 + 2 + 2 + 2);
        drop(pool);
    });
}

/// Limits the worker's address space to what it uses now and 8 MiB more.
fn tight_memory(starts: Value<u32>) {
    count_starts(starts);
    let vm_size_kb = || -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmSize:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    // The least of a few readings: a thread of the runtime that makes its malloc arena at this
    // moment maps twice the arena's size for an instant (to align it), and a reading then
    // would leave room for the item this worker must not be able to take.
    let kb = (0..5)
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(2));
            vm_size_kb()
        })
        .min()
        .unwrap();
    let limit = (kb + 8 * 1024) * 1024;
    let lim = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit with a valid struct.
    unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) };
}

fn buf_len(v: serde_bytes::ByteBuf) -> usize {
    v.len()
}

#[test]
fn work_that_kills_workers_before_any_item_is_named_fails_after_three_deaths() {
    let starts = Value::new(0u32).unwrap();
    let pool = Pool::builder()
        .processes(1)
        .initializer(tight_memory, starts.clone())
        .build()
        .unwrap();
    bounded(move || {
        // 64 MiB: the worker cannot even receive it (its allocation fails and it aborts), so
        // its board never names the item.
        let big = serde_bytes::ByteBuf::from(vec![7u8; 64 << 20]);
        match pool.apply_async(buf_len, big).unwrap().get_timeout(BOUND) {
            Err(Error::WorkerLost { index: 0, .. }) => {}
            other => panic!("unexpected: {other:?}"),
        }
        let small = serde_bytes::ByteBuf::from(vec![1, 2, 3]);
        assert_eq!(pool.apply(buf_len, small).unwrap(), 3);
        // Three deaths, three replacements: no restart loop.
        assert_eq!(starts.get(), 1 + 3);
        drop(pool);
    });
}

/// Counts what it reads, and refuses to go past a million items: an endless input, for a test.
struct Endless {
    next: u64,
    read: Arc<std::sync::atomic::AtomicU64>,
}

impl Iterator for Endless {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        assert!(self.next < 1_000_000, "read far past any window");
        self.read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.next += 1;
        Some(self.next - 1)
    }
}

/// Issue 14, defect 4: `imap` and `imap_unordered` read the input while they yield, a bounded
/// window ahead of the results taken (32 per worker).
#[test]
fn imap_streams_an_endless_input_a_bounded_window_ahead() {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    let pool = Arc::new(Pool::new(2).unwrap());
    let p = pool.clone();
    bounded(move || {
        let read = Arc::new(AtomicU64::new(0));
        let input = Endless {
            next: 0,
            read: read.clone(),
        };
        let mut it = p.imap(square, input).unwrap();
        for i in 0..2_000u64 {
            assert_eq!(it.next().unwrap().unwrap(), i * i);
        }
        let ahead = read.load(Relaxed) - 2_000;
        assert!(ahead <= 64, "{ahead} items read ahead of the results taken");
        drop(it);

        let read = Arc::new(AtomicU64::new(0));
        let input = Endless {
            next: 0,
            read: read.clone(),
        };
        let mut got: Vec<(usize, u64)> = p
            .imap_unordered(square, input)
            .unwrap()
            .take(2_000)
            .map(|(i, r)| (i, r.unwrap()))
            .collect();
        assert!(read.load(Relaxed) <= 2_000 + 64, "{}", read.load(Relaxed));
        assert!(got.iter().all(|&(i, r)| r == (i as u64).pow(2)));
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 2_000);

        // A truly endless one.
        let first: Vec<u64> = p
            .imap(square, 0u64..)
            .unwrap()
            .take(100)
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(first[99], 99 * 99);
    });
}

/// An input that panics when it reaches item 7.
fn fails_at_seven() -> impl Iterator<Item = u64> + Send {
    (0..100u64).inspect(|&i| assert!(i != 7, "the input fails at item 7"))
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_default(),
    }
}

/// Issue 14, defect 4: an input that fails at item 7 first yields the results of items 0..7,
/// then its panic reaches the caller (CPython raises the input's exception the same way).
#[test]
fn an_imap_input_that_panics_yields_the_results_before_it_then_the_panic() {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let pool = Arc::new(Pool::new(2).unwrap());
    let p = pool.clone();
    bounded(move || {
        let mut it = p.imap(square, fails_at_seven()).unwrap();
        let mut got = Vec::new();
        let caught = catch_unwind(AssertUnwindSafe(|| {
            for r in it.by_ref() {
                got.push(r.unwrap());
            }
        }));
        assert_eq!(got, [0, 1, 4, 9, 16, 25, 36]);
        let message = panic_message(caught.unwrap_err());
        assert!(message.contains("the input fails at item 7"), "{message}");
        assert!(it.next().is_none(), "the iterator ends after the panic");

        let mut it = p.imap_unordered(square, fails_at_seven()).unwrap();
        let mut got = Vec::new();
        let caught = catch_unwind(AssertUnwindSafe(|| {
            for (i, r) in it.by_ref() {
                got.push((i, r.unwrap()));
            }
        }));
        got.sort();
        let want: Vec<(usize, u64)> = (0..7).map(|i| (i, (i as u64).pow(2))).collect();
        assert_eq!(got, want);
        let message = panic_message(caught.unwrap_err());
        assert!(message.contains("the input fails at item 7"), "{message}");
        assert!(it.next().is_none());

        // The pool goes on.
        assert_eq!(p.apply(square, 3).unwrap(), 9);
    });
}

/// Counts what it is told.
pub struct Tally {
    n: u64,
}

#[procactor::actor]
impl Tally {
    fn init(_: ()) -> Self {
        Tally { n: 0 }
    }

    pub fn add(&mut self, k: u64) {
        self.n += k;
    }

    pub fn get(&self) -> u64 {
        self.n
    }
}

/// A task that writes to a Manager list (a pipelined append) and tells an actor: neither waits
/// for an answer.
fn append_and_tell(
    (l, t, i): (
        procactor::manager::ListProxy<u64>,
        procactor::ActorRef<Tally>,
        u64,
    ),
) -> u64 {
    l.append(i).unwrap();
    t.cast().add(1).unwrap();
    i
}

/// Threads that keep both cores busy until dropped.
struct Hogs(
    Arc<std::sync::atomic::AtomicBool>,
    Vec<std::thread::JoinHandle<()>>,
);

impl Hogs {
    fn start(n: usize) -> Hogs {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Hogs(stop, threads)
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.1.drain(..) {
            let _ = t.join();
        }
    }
}

/// Python's habit: a Pool whose tasks write to a Manager (and tell actors), read right after
/// `map`. A task's tells and Manager writes are done when its result comes back, so nothing is
/// missing then, with both cores busy too.
#[test]
fn a_tasks_tells_and_manager_writes_are_done_when_its_result_comes_back() {
    bounded(|| {
        let m = procactor::Manager::start().unwrap();
        struct Killed(procactor::ActorRef<Tally>);
        impl Drop for Killed {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.join_timeout(BOUND);
            }
        }
        let tally = Killed(procactor::spawn::<Tally>(()).unwrap());
        let tally = &tally.0;
        let pool = Pool::new(4).unwrap();
        for round in 1..=6u64 {
            // Half the rounds with two threads keeping both cores busy.
            let _hogs = (round > 3).then(|| Hogs::start(2));
            let l = m.list::<u64>().unwrap();
            let items: Vec<_> = (0..200).map(|i| (l.clone(), tally.clone(), i)).collect();
            let got = pool.map(append_and_tell, items).unwrap();
            assert_eq!(got, (0..200).collect::<Vec<u64>>());
            let mut seen = l.snapshot().unwrap();
            let told = tally.timeout(BOUND).get().unwrap();
            seen.sort();
            assert_eq!(
                seen.len(),
                200,
                "round {round}: {} of 200 appends visible after map",
                seen.len()
            );
            assert_eq!(seen, (0..200).collect::<Vec<u64>>());
            assert_eq!(told, round * 200, "round {round}: tells missing after map");
        }
    });
}

fn fails_on_purpose(_: ()) -> u8 {
    panic!("failed on purpose")
}

#[test]
fn async_callbacks_run_once_off_the_pool_thread_with_the_result_or_the_error() {
    let pool = Pool::new(2).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // A slow callback: the pool goes on meanwhile.
    let slow_tx = tx.clone();
    pool.apply_async(square, 3).unwrap().on_done(move |r| {
        std::thread::sleep(Duration::from_millis(3000));
        slow_tx
            .send(format!("{:?}", r.map_err(|e| e.to_string())))
            .unwrap();
    });
    let t = std::time::Instant::now();
    let squares = pool.map(square, 0..200).unwrap();
    assert_eq!(squares.len(), 200);
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "the pool waited for a callback"
    );
    let err_tx = tx.clone();
    pool.apply_async(fails_on_purpose, ())
        .unwrap()
        .on_done(move |r| err_tx.send(format!("{}", r.unwrap_err())).unwrap());
    let map_tx = tx;
    pool.starmap_async(|a: u64, b: u64| a + b, [(1, 2), (3, 4)])
        .unwrap()
        .on_done(move |r| map_tx.send(format!("{:?}", r.unwrap())).unwrap());
    let mut got: Vec<String> = (0..3).map(|_| rx.recv_timeout(BOUND).unwrap()).collect();
    got.sort();
    assert_eq!(got[0], "Ok(9)");
    assert_eq!(got[1], "[3, 7]");
    assert!(got[2].contains("failed on purpose"), "{}", got[2]);
    // Each ran once: nothing more comes.
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
}
