//! Processes: values, failures as data, lifecycle calls, daemons, start methods. Real processes,
//! real signals.

mod common;

use std::time::{Duration, Instant};

use common::{bounded, eventually, pid_alive, reaped, BOUND};
use procactor::{Connection, Error, ExitReason, Pipe, Process, StartMethod};

procactor::test_support!();

const METHODS: [StartMethod; 3] = [
    StartMethod::Spawn,
    StartMethod::Fork,
    StartMethod::ForkServer,
];

fn square(x: u64) -> u64 {
    x * x
}

fn boom(msg: String) -> u32 {
    panic!("{msg}")
}

fn exit_with(code: i32) {
    std::process::exit(code)
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms))
}

fn forever(_: ()) {
    loop {
        std::thread::park();
    }
}

#[test]
fn returns_values_with_every_start_method() {
    for method in METHODS {
        let p = Process::new(square, 12)
            .start_method(method)
            .start()
            .unwrap();
        assert_eq!(p.join_timeout(BOUND).unwrap(), 144, "{method:?}");
        assert_eq!(p.exitcode(), Some(0));
        assert!(!p.is_alive());
    }
}

#[test]
fn a_non_capturing_closure_runs_in_a_child() {
    let p = Process::new(|(a, b): (String, usize)| a.repeat(b), ("ab".to_string(), 3))
        .start()
        .unwrap();
    assert_eq!(p.join_timeout(BOUND).unwrap(), "ababab");
}

#[test]
fn a_panic_comes_back_with_message_and_location() {
    for method in METHODS {
        let p = Process::new(boom, "kaput".to_string())
            .name("bomb")
            .start_method(method)
            .start()
            .unwrap();
        let pid = p.pid();
        match p.join_timeout(BOUND) {
            Err(Error::ProcessFailed {
                name,
                pid: got,
                reason,
            }) => {
                let ExitReason::Panicked { message, location } = *reason else {
                    panic!("{method:?}: expected a panic, got {reason:?}");
                };
                assert_eq!(
                    (name.as_str(), got, message.as_str()),
                    ("bomb", pid, "kaput")
                );
                let location = location.expect("a location");
                assert!(location.starts_with("tests/process.rs:"), "{location}");
            }
            other => panic!("{method:?}: expected Panicked, got {other:?}"),
        }
        assert_eq!(
            p.exitcode(),
            Some(1),
            "Python's exit code for an uncaught exception"
        );
    }
}

#[test]
fn exit_inside_the_function_is_exited_with_its_code() {
    for method in METHODS {
        let p = Process::new(exit_with, 3)
            .start_method(method)
            .start()
            .unwrap();
        match p.join_timeout(BOUND) {
            Err(Error::ProcessFailed { pid, reason, .. })
                if *reason == ExitReason::Exited { code: 3 } =>
            {
                assert_eq!(pid, p.pid())
            }
            other => panic!("{method:?}: expected Exited(3), got {other:?}"),
        }
        assert_eq!(p.exitcode(), Some(3));
    }
}

#[test]
fn kill_and_terminate_are_reported_as_signals() {
    for method in METHODS {
        let p = reaped(
            Process::new(forever, ())
                .start_method(method)
                .start()
                .unwrap(),
        );
        assert!(p.is_alive());
        assert_eq!(p.exitcode(), None);
        p.kill().unwrap();
        assert!(matches!(
            p.join_timeout(BOUND),
            Err(e) if e.exit_reason() == Some(&ExitReason::Killed { signal: 9 })
        ));
        assert_eq!(p.exitcode(), Some(-9));

        let p = reaped(
            Process::new(forever, ())
                .start_method(method)
                .start()
                .unwrap(),
        );
        p.terminate().unwrap();
        assert!(matches!(
            p.join_timeout(BOUND),
            Err(e) if e.exit_reason() == Some(&ExitReason::Killed { signal: 15 })
        ));
        assert_eq!(p.exitcode(), Some(-15));
    }
}

#[test]
fn an_external_sigkill_is_reported_as_killed() {
    let p = reaped(Process::new(forever, ()).start().unwrap());
    // SAFETY: plain kill(2) on our own child's pid, which stays ours until we reap it.
    assert_eq!(unsafe { libc::kill(p.pid() as i32, libc::SIGKILL) }, 0);
    match p.join_timeout(BOUND) {
        Err(Error::ProcessFailed { reason, pid, name }) => {
            assert_eq!((*reason, pid), (ExitReason::Killed { signal: 9 }, p.pid()));
            assert!(name.starts_with("Process-"));
        }
        other => panic!("expected Killed, got {other:?}"),
    }
}

#[test]
fn join_timeout_honours_its_timeout_and_the_child_can_be_joined_later() {
    let p = reaped(Process::new(sleep_ms, 400).start().unwrap());
    let t = Instant::now();
    let err = p.join_timeout(Duration::from_millis(100)).unwrap_err();
    let waited = t.elapsed();
    assert!(
        matches!(err, Error::Timeout(d) if d == Duration::from_millis(100)),
        "{err:?}"
    );
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_millis(350),
        "{waited:?}"
    );
    assert!(p.is_alive());
    p.join_timeout(BOUND).unwrap();
}

#[test]
fn join_twice_terminate_after_exit_and_kill_after_exit_are_defined() {
    let p = Process::new(square, 3).start().unwrap();
    assert_eq!(p.join_timeout(BOUND).unwrap(), 9);
    assert!(matches!(
        p.join_timeout(BOUND),
        Err(Error::AlreadyJoined { .. })
    ));
    p.terminate().unwrap();
    p.kill().unwrap();
    assert_eq!(p.exitcode(), Some(0));

    // A failure is reported again by every join.
    let p = Process::new(exit_with, 4).start().unwrap();
    for _ in 0..2 {
        assert!(matches!(
            p.join_timeout(BOUND),
            Err(e) if e.exit_reason() == Some(&ExitReason::Exited { code: 4 })
        ));
    }
}

fn whoami(_: ()) -> (String, u32, Option<(String, u32)>) {
    let me = procactor::current_process();
    (
        me.name,
        me.pid,
        procactor::process::parent_process().map(|p| (p.name, p.pid)),
    )
}

#[test]
fn current_and_parent_process_inside_a_child() {
    assert_eq!(procactor::current_process().name, "MainProcess");
    assert_eq!(procactor::process::parent_process(), None);
    for method in METHODS {
        let p = Process::new(whoami, ())
            .name("who")
            .start_method(method)
            .start()
            .unwrap();
        let (name, pid, parent) = p.join_timeout(BOUND).unwrap();
        assert_eq!((name.as_str(), pid), ("who", p.pid()), "{method:?}");
        assert_eq!(
            parent,
            Some(("MainProcess".to_string(), std::process::id())),
            "{method:?}"
        );
    }
}

#[test]
fn active_children_lists_running_children_only() {
    let p = reaped(Process::new(forever, ()).name("listed").start().unwrap());
    let found = procactor::process::active_children()
        .into_iter()
        .find(|c| c.pid == p.pid());
    assert_eq!(found.map(|c| c.name), Some("listed".to_string()));
    p.kill().unwrap();
    let _ = p.join_timeout(BOUND);
    assert!(!procactor::process::active_children()
        .iter()
        .any(|c| c.pid == p.pid()));
}

#[test]
fn cpu_count_matches_the_machine() {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let n: usize = online
        .trim()
        .split(',')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum();
    assert_eq!(procactor::cpu_count(), n);
}

/// A middle process: starts a daemon and a non-daemon child, reports their pids, then waits to
/// be killed.
fn middle((report, method): (Connection<(u32, u32)>, StartMethod)) {
    let daemon = Process::new(forever, ())
        .daemon(true)
        .start_method(method)
        .start()
        .unwrap();
    let plain = Process::new(forever, ())
        .start_method(method)
        .start()
        .unwrap();
    report.send((daemon.pid(), plain.pid())).unwrap();
    forever(());
}

#[test]
fn daemon_children_die_with_a_sigkilled_parent_and_others_survive() {
    for method in METHODS {
        let (rx, tx) = Pipe::<(u32, u32)>::simplex().unwrap();
        let m = reaped(Process::new(middle, (tx, method)).start().unwrap());
        let (daemon, plain) = rx.recv_timeout(BOUND).unwrap();
        assert!(pid_alive(daemon) && pid_alive(plain));
        m.kill().unwrap();
        let _ = m.join_timeout(BOUND);
        let died = eventually(BOUND, || !pid_alive(daemon));
        let survived = pid_alive(plain);
        // Clean up the survivor (an orphan now, not our child) before asserting.
        // SAFETY: kill(2) on a pid we were just told about; at worst it is already gone.
        unsafe { libc::kill(plain as i32, libc::SIGKILL) };
        assert!(
            died,
            "{method:?}: the daemon child outlived its SIGKILLed parent"
        );
        assert!(
            survived,
            "{method:?}: a non-daemon child must outlive its parent"
        );
    }
}

/// A daemon middle process: starts a child with the default flag and one that says it is not a
/// daemon, reports their pids, then waits to be killed.
fn daemon_middle((report, method): (Connection<(u32, u32)>, StartMethod)) {
    let inherits = Process::new(forever, ())
        .start_method(method)
        .start()
        .unwrap();
    let plain = Process::new(forever, ())
        .daemon(false)
        .start_method(method)
        .start()
        .unwrap();
    report.send((inherits.pid(), plain.pid())).unwrap();
    forever(());
}

#[test]
fn a_daemons_children_are_daemons_unless_they_say_otherwise() {
    for method in METHODS {
        let (rx, tx) = Pipe::<(u32, u32)>::simplex().unwrap();
        let m = reaped(
            Process::new(daemon_middle, (tx, method))
                .daemon(true)
                .start()
                .unwrap(),
        );
        let (inherits, plain) = rx.recv_timeout(BOUND).unwrap();
        assert!(pid_alive(inherits) && pid_alive(plain));
        m.kill().unwrap();
        let _ = m.join_timeout(BOUND);
        let died = eventually(BOUND, || !pid_alive(inherits));
        let survived = pid_alive(plain);
        // SAFETY: kill(2) on pids we were just told about; at worst they are already gone.
        unsafe {
            libc::kill(plain as i32, libc::SIGKILL);
            libc::kill(inherits as i32, libc::SIGKILL);
        }
        assert!(died, "{method:?}: a daemon's default child outlived it");
        assert!(
            survived,
            "{method:?}: daemon(false) must win over the inherited flag"
        );
    }
}

fn sleep_then_report(_: ()) -> u8 {
    std::thread::sleep(Duration::from_secs(60));
    1
}

#[test]
fn interrupt_sends_sigint() {
    let p = reaped(Process::new(sleep_then_report, ()).start().unwrap());
    assert!(eventually(BOUND, || p.is_alive()));
    p.interrupt().unwrap();
    let e = p.join_timeout(BOUND).unwrap_err();
    assert_eq!(
        e.exit_reason(),
        Some(&procactor::ExitReason::Killed { signal: 2 })
    );
    // Ended: a no-op.
    p.interrupt().unwrap();
}

fn spawn_grandchild(_: ()) -> u64 {
    Process::new(square, 5).start().unwrap().join().unwrap()
}

#[test]
fn children_can_start_children() {
    for method in METHODS {
        let p = Process::new(spawn_grandchild, ())
            .start_method(method)
            .start()
            .unwrap();
        assert_eq!(p.join_timeout(BOUND).unwrap(), 25, "{method:?}");
    }
}

#[test]
fn the_default_start_method_is_used_and_can_be_changed() {
    fn via(_: ()) -> u32 {
        std::process::id()
    }
    assert_eq!(procactor::process::get_start_method(), StartMethod::Spawn);
    let p = Process::new(via, ()).start().unwrap();
    assert_eq!(p.join_timeout(BOUND).unwrap(), p.pid());
}

/// A result type whose serialization fails in the child.
struct Unencodable;

impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be serialized",
        ))
    }
}

impl<'de> serde::Deserialize<'de> for Unencodable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Unencodable)
    }
}

fn make_unencodable(_: ()) -> Unencodable {
    Unencodable
}

#[test]
fn a_result_that_fails_to_serialize_is_an_encode_error() {
    let p = Process::new(make_unencodable, ()).start().unwrap();
    match p.join_timeout(BOUND) {
        // postcard keeps no custom message; the error names the type and the child.
        Err(Error::Encode { type_name, reason }) => {
            assert!(type_name.ends_with("Unencodable"), "{type_name}");
            assert!(reason.contains(&format!("pid {}", p.pid())), "{reason}");
        }
        other => panic!("expected Encode, got {:?}", other.map(|_| ())),
    }
}

/// Bytes as bytes (serde_bytes): what is measured is the transport, not a debug build's
/// element-by-element encoding of 48 M `u8`s, which alone took longer than the bound on a
/// busy machine.
fn big_result(n: usize) -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from(vec![0xab; n])
}

#[test]
fn a_large_result_comes_back_whole() {
    let n = 48 << 20;
    let p = reaped(Process::new(big_result, n).start().unwrap());
    let v = p.join_timeout(BOUND).unwrap();
    assert_eq!(v.len(), n);
    assert!(v.iter().all(|&b| b == 0xab));
}

fn uses_the_runtime_after_fork(_: ()) -> (usize, u64) {
    let listed = procactor::process::active_children().len();
    let p = Process::new(square, 6)
        .start_method(StartMethod::ForkServer)
        .start()
        .unwrap();
    (listed, p.join().unwrap())
}

#[test]
fn a_forked_child_has_runtime_state_of_its_own() {
    // The parent has a running child and a fork server; a forked copy must see neither as its own.
    let running = reaped(Process::new(forever, ()).start().unwrap());
    Process::new(square, 1)
        .start_method(StartMethod::ForkServer)
        .start()
        .unwrap()
        .join()
        .unwrap();
    let p = Process::new(uses_the_runtime_after_fork, ())
        .start_method(StartMethod::Fork)
        .start()
        .unwrap();
    assert_eq!(p.join_timeout(BOUND).unwrap(), (0, 36));
    assert!(running.is_alive());
}

/// Starts a daemon from a short-lived thread, reports its pid once the thread has ended, then
/// waits to be killed.
fn middle_with_thread((report, method): (Connection<u32>, StartMethod)) {
    let daemon = std::thread::spawn(move || {
        let p = Process::new(forever, ())
            .daemon(true)
            .start_method(method)
            .start()
            .unwrap();
        let pid = p.pid();
        std::mem::forget(p); // the thread ends; the process does not
        pid
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    report.send(daemon).unwrap();
    forever(());
}

#[test]
fn a_daemon_started_from_a_thread_outlives_the_thread_but_not_the_process() {
    for method in METHODS {
        let (rx, tx) = Pipe::<u32>::simplex().unwrap();
        let m = reaped(
            Process::new(middle_with_thread, (tx, method))
                .start()
                .unwrap(),
        );
        let daemon = rx.recv_timeout(BOUND).unwrap();
        let alive_after_thread = pid_alive(daemon);
        m.kill().unwrap();
        let _ = m.join_timeout(BOUND);
        let died = eventually(BOUND, || !pid_alive(daemon));
        if !died {
            // SAFETY: kill(2) on the pid we were told about, to leave nothing behind.
            unsafe { libc::kill(daemon as i32, libc::SIGKILL) };
        }
        assert!(
            alive_after_thread,
            "{method:?}: the daemon died with the thread that started it"
        );
        assert!(died, "{method:?}: the daemon outlived its SIGKILLed parent");
    }
}

/// Ignores SIGCHLD (so the kernel reaps children itself), then starts and joins a child.
fn join_with_sigchld_ignored(_: ()) -> (u64, bool, Option<i32>, String) {
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let value = Process::new(square, 7)
        .start()
        .unwrap()
        .join_timeout(BOUND)
        .unwrap();
    let silent = Process::new(exit_with, 5).start().unwrap();
    let err = silent.join_timeout(BOUND).unwrap_err();
    (value, silent.is_alive(), silent.exitcode(), err.to_string())
}

#[test]
fn a_child_reaped_by_someone_else_does_not_hang_join() {
    let p = reaped(Process::new(join_with_sigchld_ignored, ()).start().unwrap());
    let (value, alive, exitcode, err) = p.join_timeout(BOUND).expect("join must not hang");
    assert_eq!(value, 49, "a reported value still comes back");
    assert!(!alive);
    assert_eq!(exitcode, None, "the status is unknown, not invented");
    assert!(err.contains("exit status was collected elsewhere"), "{err}");
}

fn answer() -> u32 {
    42
}

/// Every shape of target runs in a child: a function of no argument (with `()`), a closure that
/// captures nothing, a function pointer; in a Pool and an Executor too. A closure that captures
/// a pointer-sized value (the one shape the compiler cannot refuse) fails at start, with why.
#[test]
fn targets_of_every_shape_run_and_captures_are_refused_with_a_reason() {
    bounded(|| {
        assert_eq!(
            Process::new(answer, ()).start().unwrap().join().unwrap(),
            42
        );
        let closure = Process::new(|x: u32| x * 3, 14).start().unwrap();
        assert_eq!(closure.join().unwrap(), 42);
        let pointer: fn(u32) -> u32 = |x| x + 1;
        assert_eq!(
            Process::new(pointer, 41).start().unwrap().join().unwrap(),
            42
        );
        let pool = procactor::Pool::new(1).unwrap();
        assert_eq!(pool.apply(answer, ()).unwrap(), 42);
        assert_eq!(pool.map(|x: u32| x * 2, [1, 2]).unwrap(), [2, 4]);
        let ex = procactor::Executor::new(1).unwrap();
        assert_eq!(ex.submit(answer, ()).unwrap().result().unwrap(), 42);
        let k = 5u64;
        let err = Process::new(move |x: u64| x + k, 1).start().unwrap_err();
        assert!(
            matches!(err, Error::Start { ref reason, .. } if reason.contains("captures")),
            "{err}"
        );
        assert!(pool.apply(move |x: u64| x + k, 1).is_err());
    });
}

/// A grandchild: reports whether its parent lives, then waits for it to end and reports again.
fn watch_parent(report: Connection<(bool, bool)>) {
    let parent = procactor::process::parent_process().unwrap();
    let alive = parent.is_alive();
    let ended = parent.join_timeout(BOUND).is_ok();
    report.send((alive, ended && !parent.is_alive())).unwrap();
}

/// Starts `watch_parent`, says it did, and waits to be killed.
fn watched_middle(
    (report, started, method): (Connection<(bool, bool)>, Connection<u32>, StartMethod),
) {
    let child = Process::new(watch_parent, report)
        .daemon(false)
        .start_method(method)
        .start()
        .unwrap();
    started.send(child.pid()).unwrap();
    forever(());
}

#[test]
fn a_child_sees_its_parent_alive_then_ended() {
    for method in METHODS {
        let (report_rx, report_tx) = Pipe::<(bool, bool)>::simplex().unwrap();
        let (started_rx, started_tx) = Pipe::<u32>::simplex().unwrap();
        let m = reaped(
            Process::new(watched_middle, (report_tx, started_tx, method))
                .start()
                .unwrap(),
        );
        let grandchild = started_rx.recv_timeout(BOUND).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        m.kill().unwrap();
        let got = report_rx.recv_timeout(BOUND);
        // SAFETY: kill(2) on a pid we were told about; at worst it is already gone.
        unsafe { libc::kill(grandchild as i32, libc::SIGKILL) };
        assert_eq!(got.unwrap(), (true, true), "{method:?}");
    }
}
