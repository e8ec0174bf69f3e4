//! Executor and Future: completion order, wait conditions, map with a deadline, cancel,
//! callbacks, `.await`, shutdown, and a worker killed under a future.

mod common;

use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use common::{bounded, pid_alive, BOUND};
use procactor::{
    pool::as_completed, pool::as_completed_timeout, pool::wait, pool::wait_timeout,
    pool::ReturnWhen, Error, Executor,
};

procactor::test_support!();

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn fail_if_odd(x: u64) -> u64 {
    assert!(x % 2 == 0, "odd");
    x
}

fn suicide(_: ()) -> u32 {
    // SAFETY: raising a signal on ourselves has no preconditions.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    0
}

#[test]
fn as_completed_yields_in_completion_order() {
    let ex = Arc::new(Executor::new(3).unwrap());
    let e = ex.clone();
    bounded(move || {
        let futures: Vec<_> = [600, 50, 300]
            .into_iter()
            .map(|ms| e.submit(nap, ms).unwrap())
            .collect();
        let order: Vec<u64> = as_completed(&futures)
            .map(|f| f.result().unwrap())
            .collect();
        assert_eq!(order, [50, 300, 600]);
        // Executor::map keeps input order.
        let mapped: Vec<u64> = e
            .map(nap, [300, 10, 100])
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(mapped, [300, 10, 100]);
    });
}

#[test]
fn as_completed_timeout_and_map_timeout_give_up_on_time() {
    let ex = Arc::new(Executor::new(2).unwrap());
    let e = ex.clone();
    bounded(move || {
        let futures = vec![e.submit(nap, 10).unwrap(), e.submit(nap, 1_500).unwrap()];
        let t = Instant::now();
        let got: Vec<_> = as_completed_timeout(&futures, Duration::from_millis(300)).collect();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().unwrap().result().unwrap(), 10);
        assert!(got[1].as_ref().unwrap_err().is_timeout());

        let mut it = e
            .map_timeout(nap, [5, 1_500, 5], Duration::from_millis(300))
            .unwrap();
        assert_eq!(it.next().unwrap().unwrap(), 5);
        assert!(it.next().unwrap().unwrap_err().is_timeout());
        assert!(it.next().is_none());
    });
}

/// A task killed for its own `task_timeout` is that item's error; the map's deadline is another
/// thing, and the items after it still come.
#[test]
fn a_task_timeout_inside_map_timeout_fails_one_item_not_the_rest() {
    bounded(|| {
        let ex = Executor::builder()
            .processes(1)
            .task_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let results: Vec<_> = ex
            .map_timeout(nap, [5, 5_000, 5, 6], BOUND)
            .unwrap()
            .collect();
        assert_eq!(results.len(), 4, "{results:?}");
        assert_eq!(results[0].as_ref().ok(), Some(&5));
        assert!(
            matches!(&results[1], Err(Error::Timeout(t)) if *t == Duration::from_millis(300)),
            "{:?}",
            results[1]
        );
        assert_eq!(results[2].as_ref().ok(), Some(&5));
        assert_eq!(results[3].as_ref().ok(), Some(&6));
    });
}

#[test]
fn wait_conditions() {
    let ex = Arc::new(Executor::new(2).unwrap());
    let e = ex.clone();
    bounded(move || {
        let futures = vec![e.submit(nap, 20).unwrap(), e.submit(nap, 800).unwrap()];
        let w = wait(&futures, ReturnWhen::FirstCompleted);
        assert_eq!((w.done.len(), w.not_done.len()), (1, 1));
        let w = wait(&futures, ReturnWhen::AllCompleted);
        assert_eq!((w.done.len(), w.not_done.len()), (2, 0));

        // The other future cannot finish before the event is set: wait returned on the
        // exception (a timing here failed under load, where a panic takes long to report).
        let ev = procactor::Event::new().unwrap();
        let _release = SetOnDrop(ev.clone());
        let futures = vec![
            e.submit(fail_if_odd, 1).unwrap(),
            e.submit(blocker, ev.clone()).unwrap(),
        ];
        let w = wait(&futures, ReturnWhen::FirstException);
        assert_eq!((w.done.len(), w.not_done.len()), (1, 1));
        assert!(matches!(
            w.done[0].result(),
            Err(Error::TaskPanicked { .. })
        ));
        ev.set();
        assert_eq!(futures[1].result_timeout(BOUND).unwrap(), 1);

        let slow = vec![e.submit(nap, 1_000).unwrap()];
        let w = wait_timeout(&slow, ReturnWhen::AllCompleted, Duration::from_millis(50));
        assert_eq!(w.not_done.len(), 1);
        slow[0].cancel();
    });
}

#[test]
fn cancel_only_before_start_and_callbacks_run_once() {
    let ex = Arc::new(Executor::new(1).unwrap());
    let e = ex.clone();
    bounded(move || {
        let running = e.submit(nap, 300).unwrap();
        let queued: Vec<_> = (0..10).map(|_| e.submit(nap, 300).unwrap()).collect();
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        queued[9].add_done_callback(move |f| tx.send(f.cancelled()).unwrap());
        assert!(queued[9].cancel());
        assert!(queued[9].cancel(), "cancelling twice is still cancelled");
        assert!(rx.recv_timeout(BOUND).unwrap());
        assert!(matches!(queued[9].result(), Err(Error::Cancelled)));
        assert_eq!(running.result().unwrap(), 300);
        assert!(!running.cancel());
        // A callback on a finished future runs at once.
        running.add_done_callback(move |f| tx2.send(f.done()).unwrap());
        assert!(rx.recv_timeout(BOUND).unwrap());
        for f in &queued[..9] {
            f.cancel();
        }
    });
}

struct Flag(std::sync::Mutex<bool>);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        *self.0.lock().unwrap() = true;
    }
}

#[test]
fn futures_can_be_awaited() {
    let ex = Arc::new(Executor::new(1).unwrap());
    let e = ex.clone();
    bounded(move || {
        let mut f = e.submit(nap, 100).unwrap();
        let flag = Arc::new(Flag(std::sync::Mutex::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        use std::future::Future as _;
        assert!(std::pin::Pin::new(&mut f).poll(&mut cx).is_pending());
        assert!(
            common::eventually(BOUND, || *flag.0.lock().unwrap()),
            "never woken"
        );
        match std::pin::Pin::new(&mut f).poll(&mut cx) {
            Poll::Ready(r) => assert_eq!(r.unwrap(), 100),
            Poll::Pending => panic!("woken but not ready"),
        }
    });
}

#[test]
fn a_killed_worker_fails_one_future_and_the_executor_goes_on() {
    let ex = Arc::new(Executor::new(2).unwrap());
    let e = ex.clone();
    bounded(move || {
        let others: Vec<_> = (0..20).map(|_| e.submit(nap, 20).unwrap()).collect();
        let victim = e.submit(suicide, ()).unwrap();
        assert!(matches!(
            victim.result(),
            Err(Error::WorkerLost {
                signal: Some(9),
                ..
            })
        ));
        for f in &others {
            assert_eq!(f.result().unwrap(), 20);
        }
        assert_eq!(e.submit(nap, 1).unwrap().result().unwrap(), 1);
    });
    assert_eq!(ex.pids().len(), 2);
}

#[test]
fn shutdown_waits_cancels_and_refuses_new_work() {
    let ex = Arc::new(Executor::new(1).unwrap());
    let pids = ex.pids();
    let e = ex.clone();
    bounded(move || {
        let futures: Vec<_> = (0..20).map(|_| e.submit(nap, 50).unwrap()).collect();
        e.shutdown(true, true);
        assert_eq!(futures[0].result().unwrap(), 50);
        assert!(futures[19].cancelled());
        assert!(futures.iter().all(|f| f.done()));
        assert!(matches!(e.submit(nap, 1), Err(Error::Closed)));
    });
    assert!(pids.iter().all(|&p| !pid_alive(p)), "workers left behind");
}

#[test]
fn drop_waits_for_submitted_work() {
    let ex = Executor::new(2).unwrap();
    let pids = ex.pids();
    let f = ex.submit(nap, 200).unwrap();
    let t = Instant::now();
    drop(ex);
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert_eq!(f.result_timeout(BOUND).unwrap(), 200);
    assert!(pids.iter().all(|&p| !pid_alive(p)), "workers left behind");
}

fn inc(x: u64) -> u64 {
    x + 1
}

/// Issue 14, defect 1: 5,000 futures queued behind busy workers (one and two) go out in the
/// largest batches the pool makes, 1,024 tasks (in a release build, where they are cheap enough);
/// they all complete, and the executor drops. Such a batch used to hang everything.
#[test]
fn thousands_of_queued_futures_complete_on_one_and_two_workers() {
    for workers in [1, 2] {
        bounded(move || {
            let ex = Executor::new(workers).unwrap();
            for round in 0..3 {
                let ev = procactor::Event::new().unwrap();
                let _release = SetOnDrop(ev.clone());
                let busy: Vec<_> = (0..workers)
                    .map(|_| ex.submit(blocker, ev.clone()).unwrap())
                    .collect();
                let futures: Vec<_> = (0..5_000u64).map(|i| ex.submit(inc, i).unwrap()).collect();
                ev.set();
                for f in &busy {
                    assert_eq!(f.result_timeout(BOUND).unwrap(), 1);
                }
                for (i, f) in futures.iter().enumerate() {
                    assert_eq!(
                        f.result_timeout(BOUND).unwrap(),
                        i as u64 + 1,
                        "{workers} workers, round {round}"
                    );
                }
            }
            drop(ex);
        });
    }
}

fn square(x: u64) -> u64 {
    x * x
}

/// Blocks its worker until `ev` is set: a task that finishes when the test says so.
fn blocker(ev: procactor::Event) -> u64 {
    ev.wait().unwrap();
    1
}

/// Sets its event when dropped: a failing test releases its blockers (and its executor, which
/// waits for them when dropped) instead of hanging.
struct SetOnDrop(procactor::Event);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// Issue 14, defect 3: `wait(.., FirstException)` does not take a cancelled future for one that
/// raised (CPython: a cancelled future did not raise); it waits for the others.
#[test]
fn wait_first_exception_does_not_count_a_cancelled_future() {
    let ex = Arc::new(Executor::new(1).unwrap());
    let e = ex.clone();
    bounded(move || {
        let ev = procactor::Event::new().unwrap();
        let _release = SetOnDrop(ev.clone());
        let running = e.submit(blocker, ev.clone()).unwrap();
        // Queued behind the running one (a worker holds two batches at most): cancellable.
        let queued: Vec<_> = (0..5).map(|_| e.submit(nap, 1).unwrap()).collect();
        assert!(queued[4].cancel());
        let futures = vec![queued[4].clone(), running.clone()];
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let w = wait(&futures, ReturnWhen::FirstException);
            tx.send((w.done.len(), w.not_done.len())).unwrap();
        });
        // The running future cannot finish before the event: wait must still be waiting.
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "wait returned on a cancelled future"
        );
        ev.set();
        assert_eq!(rx.recv_timeout(BOUND).unwrap(), (2, 0));
        assert_eq!(running.result().unwrap(), 1);
        for f in &queued {
            f.result_timeout(BOUND).ok();
        }
        // A future that raises still ends the wait at once; one still running is not done.
        let ev = procactor::Event::new().unwrap();
        let _release = SetOnDrop(ev.clone());
        let futures = vec![
            queued[4].clone(),
            e.submit(fail_if_odd, 1).unwrap(),
            e.submit(blocker, ev.clone()).unwrap(),
        ];
        let w = wait(&futures, ReturnWhen::FirstException);
        assert_eq!((w.done.len(), w.not_done.len()), (2, 1));
        ev.set();
        assert_eq!(futures[2].result_timeout(BOUND).unwrap(), 1);
    });
}

/// Issue 14, defect 3: a future given twice (or two clones of one) is yielded and returned
/// once, as CPython does with `set(fs)`.
#[test]
fn wait_and_as_completed_collapse_duplicates() {
    let ex = Arc::new(Executor::new(2).unwrap());
    let e = ex.clone();
    bounded(move || {
        let f = e.submit(nap, 10).unwrap();
        let g = e.submit(nap, 50).unwrap();
        let futures = vec![f.clone(), f.clone(), g.clone(), f.clone(), g];
        let yielded: Vec<u64> = as_completed(&futures)
            .map(|f| f.result().unwrap())
            .collect();
        assert_eq!(yielded, [10, 50]);
        let yielded: Vec<_> = as_completed_timeout(&futures, BOUND).collect();
        assert_eq!(yielded.len(), 2);
        for when in [
            ReturnWhen::AllCompleted,
            ReturnWhen::FirstCompleted,
            ReturnWhen::FirstException,
        ] {
            let w = wait(&futures, when);
            assert_eq!((w.done.len(), w.not_done.len()), (2, 0), "{when:?}");
        }
        // Not done yet: returned once in not_done.
        let ev = procactor::Event::new().unwrap();
        let _release = SetOnDrop(ev.clone());
        let slow = e.submit(blocker, ev.clone()).unwrap();
        let twice = [slow.clone(), slow.clone()];
        let w = wait_timeout(&twice, ReturnWhen::AllCompleted, Duration::from_millis(20));
        assert_eq!((w.done.len(), w.not_done.len()), (0, 1));
        ev.set();
        assert_eq!(slow.result_timeout(BOUND).unwrap(), 1);
    });
}

const PANIC: u8 = 201;
const EXIT: u8 = 202;
const ABORT: u8 = 203;

/// An argument whose `Deserialize` kills the worker (or panics) for some values.
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

fn count_starts(starts: procactor::Value<u32>) {
    *starts.lock() += 1;
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit with a valid struct.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
}

/// Issue 14, defect 2: a future whose argument's `Deserialize` panics, exits or aborts in the
/// worker resolves (it used to be retried on worker after worker for ever, and dropping the
/// executor hung); the futures around it succeed, and each death costs one replacement.
#[test]
fn a_future_whose_argument_kills_its_worker_resolves_and_the_executor_drops() {
    let starts = procactor::Value::new(0u32).unwrap();
    let s = starts.clone();
    bounded(move || {
        let ex = Executor::builder()
            .processes(2)
            .initializer(count_starts, s.clone())
            .build()
            .unwrap();
        let mut futures = Vec::new();
        for i in 0..30u8 {
            let v = match i {
                5 => PANIC,
                15 => EXIT,
                25 => ABORT,
                i => i,
            };
            futures.push((v, ex.submit(take_fatal, Fatal(v)).unwrap()));
        }
        for (v, f) in &futures {
            match (*v, f.result_timeout(BOUND)) {
                (PANIC, Err(Error::Decode { reason, .. })) => {
                    assert!(reason.contains("refuses to decode"), "{reason}")
                }
                (EXIT, Err(Error::WorkerLost { code, .. })) => assert_eq!(code, Some(3)),
                (ABORT, Err(Error::WorkerLost { signal, .. })) => {
                    assert_eq!(signal, Some(libc::SIGABRT))
                }
                (v, Ok(got)) if v < PANIC => assert_eq!(got, v),
                (v, other) => panic!("{v}: {other:?}"),
            }
        }
        drop(ex);
        // Dropping waits for the workers (replacements included) to exit: the count is final.
        assert_eq!(s.get(), 2 + 2, "two workers, and one replacement per death");
    });
    assert_eq!(starts.get(), 4);
}

/// Issue 14, defect 4: `Executor::map` streams its input, and an input that panics at item 7
/// yields the results of items 0..7 first.
#[test]
fn executor_map_streams_and_an_input_panic_comes_after_the_results_before_it() {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let ex = Arc::new(Executor::new(2).unwrap());
    let e = ex.clone();
    bounded(move || {
        let input = (0..100u64).inspect(|&i| assert!(i != 7, "the input fails at item 7"));
        let mut it = e.map(square, input).unwrap();
        let mut got = Vec::new();
        let caught = catch_unwind(AssertUnwindSafe(|| {
            for r in it.by_ref() {
                got.push(r.unwrap());
            }
        }));
        assert_eq!(got, [0, 1, 4, 9, 16, 25, 36]);
        assert!(caught.is_err(), "the input's panic reached the caller");
        // An endless input.
        let first: Vec<u64> = e
            .map(square, 0u64..)
            .unwrap()
            .take(500)
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(first[499], 499 * 499);
    });
}

#[test]
fn terminate_and_kill_workers_stop_running_tasks_and_close_the_executor() {
    for gently in [true, false] {
        let ex = Executor::new(2).unwrap();
        let pids = ex.pids();
        let running: Vec<_> = (0..2).map(|_| ex.submit(nap, 60_000).unwrap()).collect();
        let queued: Vec<_> = (0..5).map(|_| ex.submit(nap, 60_000).unwrap()).collect();
        // Both workers busy with a task each.
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        if gently {
            ex.terminate_workers();
        } else {
            ex.kill_workers();
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        for f in running.iter().chain(&queued) {
            assert!(
                f.result_timeout(BOUND).is_err(),
                "a task finished after all"
            );
        }
        assert!(pids.iter().all(|&p| !pid_alive(p)), "a worker outlived it");
        assert!(matches!(ex.submit(nap, 1), Err(Error::Closed)));
        // Again, and on an idle executor: nothing to do, nothing hangs.
        ex.terminate_workers();
        ex.kill_workers();
        Executor::new(1).unwrap().kill_workers();
    }
}

#[test]
fn kill_workers_from_a_done_callback_does_not_wait_for_itself() {
    let ex = Arc::new(Executor::new(2).unwrap());
    let long = ex.submit(nap, 60_000).unwrap();
    let first = ex.submit(nap, 1).unwrap();
    let (tx, rx) = mpsc::channel();
    let from_callback = ex.clone();
    // Something went wrong: stop everything, from the callback (on the pool's own thread).
    first.add_done_callback(move |_| {
        from_callback.kill_workers();
        tx.send(()).unwrap();
    });
    rx.recv_timeout(BOUND)
        .expect("kill_workers in a done-callback hung");
    assert!(
        long.result_timeout(BOUND).is_err(),
        "the long task finished"
    );
    assert!(matches!(ex.submit(nap, 1), Err(Error::Closed)));
}
