//! The end of a process joins its non-daemon children and terminates its daemon ones, as
//! Python's `multiprocessing` does (`util._exit_function`): when `main` returns, when
//! `std::process::exit` is called, and when a child's function returns, before it reports.
//! (harness = false: each scenario is this whole program, run again with a role, so that what
//! happens after `main` can be watched from outside.)

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use procactor::{ExitReason, Process};

const ROLE: &str = "EXIT_JOIN_TEST_ROLE";
/// How long the non-daemon children of these scenarios work before they print.
const WORK: Duration = Duration::from_millis(300);

fn sleep_then_print(what: String) {
    std::thread::sleep(WORK);
    println!("{what}: done");
}

/// Returns 4 MiB: more than a socket holds, so the report waits for a reader.
fn sleep_then_return_a_lot(_: ()) -> Vec<u8> {
    std::thread::sleep(WORK);
    println!("big child: done");
    vec![7; 4 << 20]
}

fn forever(_: ()) {
    loop {
        std::thread::park();
    }
}

/// Waits (bounded) for process `pid` to end, and says whether it did.
fn watch(pid: u32) {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return;
    };
    let Ok(pidfd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else {
        println!("watcher: daemon already gone");
        return;
    };
    let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
    let bound = Timespec {
        tv_sec: common::BOUND.as_secs() as i64,
        tv_nsec: 0,
    };
    match poll(&mut fds, Some(&bound)) {
        Ok(1) => println!("watcher: daemon ended"),
        _ => println!("watcher: daemon still running"),
    }
}

/// A child that starts a non-daemon and a daemon child of its own, then returns (or exits).
fn middle(exit: bool) -> String {
    let grandchild = Process::new(sleep_then_print, "grandchild".to_string())
        .start()
        .unwrap();
    let daemon = Process::new(forever, ()).daemon(true).start().unwrap();
    println!("pid {}", grandchild.pid());
    println!("pid {} (daemon)", daemon.pid());
    if exit {
        std::process::exit(5);
    }
    "middle: returned".to_string()
}

/// The scenarios: each runs as the whole program.
fn scenario(role: &str) {
    match role {
        "return" => {
            let p = Process::new(sleep_then_print, "child".to_string())
                .start()
                .unwrap();
            println!("pid {}", p.pid());
            println!("parent: main returns");
        }
        "exit" => {
            // The handle is alive at exit (`exit` runs no destructors): the child's large
            // report must not wait for a reader that never comes.
            let p = Process::new(sleep_then_return_a_lot, ()).start().unwrap();
            println!("pid {}", p.pid());
            println!("parent: exits");
            std::process::exit(0);
        }
        "daemon" => {
            let d = Process::new(forever, ()).daemon(true).start().unwrap();
            let w = Process::new(watch, d.pid()).start().unwrap();
            println!("pid {} (daemon)", d.pid());
            println!("pid {}", w.pid());
            println!("parent: main returns");
        }
        "nested" | "nested-exit" => {
            let t = Instant::now();
            let p = Process::new(middle, role == "nested-exit").start().unwrap();
            println!("pid {}", p.pid());
            let joined = p.join_timeout(common::BOUND);
            let took = t.elapsed();
            match joined {
                Ok(s) => println!("{s}"),
                Err(e) if matches!(e.exit_reason(), Some(ExitReason::Exited { .. })) => {
                    if let Some(ExitReason::Exited { code }) = e.exit_reason() {
                        println!("middle: exited {code}")
                    }
                }
                Err(e) => println!("middle: {e}"),
            }
            println!("parent: joined the middle after {} ms", took.as_millis());
        }
        "bounded" => {
            procactor::process::set_exit_join_timeout(Some(WORK));
            let p = Process::new(forever, ()).name("stuck").start().unwrap();
            println!("pid {}", p.pid());
        }
        other => panic!("unknown role {other}"),
    }
}

/// What one run of a scenario showed.
struct Run {
    /// Everything the program and its children wrote before the program ended.
    out: String,
    err: String,
    took: Duration,
    code: Option<i32>,
    /// The printed pids still running when the program had ended.
    alive_at_end: Vec<u32>,
}

/// Runs a scenario as a program of its own. Its children are killed before this returns, on
/// every path: their pids are in the output.
fn run(role: &str) -> Run {
    let t = Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, role)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    rustix::io::ioctl_fionbio(&stdout, true).unwrap();
    rustix::io::ioctl_fionbio(&stderr, true).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut buf = [0u8; 4096];
    let mut read_now = |out: &mut Vec<u8>, err: &mut Vec<u8>| {
        let pipes: [(&mut dyn Read, &mut Vec<u8>); 2] = [(&mut stdout, out), (&mut stderr, err)];
        for (from, to) in pipes {
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => to.extend_from_slice(&buf[..n]),
                }
            }
        }
    };
    let status = loop {
        read_now(&mut out, &mut err);
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if t.elapsed() > common::BOUND {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let took = t.elapsed();
    // What the children wrote before the program ended is in the pipe by now; what they
    // write later is not.
    read_now(&mut out, &mut err);
    let out = String::from_utf8_lossy(&out).into_owned();
    let err = String::from_utf8_lossy(&err).into_owned();
    eprint!("{err}");
    let alive_at_end = pids(&out, "")
        .into_iter()
        .filter(|&p| common::pid_alive(p))
        .collect();
    for pid in pids(&out, "") {
        // SAFETY: kill(2) on a pid the scenario printed; at worst it is already gone.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    Run {
        out,
        err,
        took,
        code: status.and_then(|s| s.code()),
        alive_at_end,
    }
}

/// The pids printed as `pid N` lines ending with `suffix`.
fn pids(out: &str, suffix: &str) -> Vec<u32> {
    out.lines()
        .filter(|l| l.ends_with(suffix))
        .filter_map(|l| l.strip_prefix("pid ")?.split(' ').next()?.parse().ok())
        .collect()
}

fn main() {
    procactor::init();
    if let Ok(role) = std::env::var(ROLE) {
        scenario(&role);
        return;
    }
    let mut passed = 0;

    // main returns: the child's output comes before the program ends, and the end waited.
    let r = run("return");
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(
        r.out.contains("parent: main returns\n") && r.out.ends_with("child: done\n"),
        "the child's output did not come before the program ended:\n{}",
        r.out
    );
    assert!(r.took >= WORK, "{:?}", r.took);
    passed += 1;

    // std::process::exit, with the handle still alive and a report larger than a socket holds.
    let r = run("exit");
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(
        r.out.ends_with("big child: done\n"),
        "the child's output did not come before the program ended:\n{}",
        r.out
    );
    assert!(r.took >= WORK, "{:?}", r.took);
    passed += 1;

    // A daemon is terminated at exit, before the other children are joined; it is not waited
    // for (it would run for ever).
    let r = run("daemon");
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(
        r.out.ends_with("watcher: daemon ended\n"),
        "the daemon was not terminated while the program waited for its other child:\n{}",
        r.out
    );
    let daemon = pids(&r.out, "(daemon)")[0];
    assert!(
        common::eventually(common::BOUND, || !common::pid_alive(daemon)),
        "the daemon outlived the program"
    );
    passed += 1;

    // A child whose function returns (or exits) joins its own children before it reports:
    // its parent's join returns after the grandchild's output.
    for (role, ending) in [
        ("nested", "middle: returned"),
        ("nested-exit", "middle: exited 5"),
    ] {
        let r = run(role);
        assert_eq!(r.code, Some(0), "{}", r.out);
        let (before, after) = r
            .out
            .split_once(ending)
            .unwrap_or_else(|| panic!("{role}: the middle did not end as expected:\n{}", r.out));
        assert!(
            before.contains("grandchild: done\n"),
            "{role}: the middle reported before its child was done:\n{}",
            r.out
        );
        let ms: u128 = after
            .trim()
            .strip_prefix("parent: joined the middle after ")
            .and_then(|s| s.strip_suffix(" ms"))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{role}: {}", r.out));
        assert!(ms >= WORK.as_millis(), "{role}: joined after {ms} ms");
        // The middle's daemon was terminated when the middle ended.
        let daemon = pids(&r.out, "(daemon)")[0];
        assert!(
            common::eventually(common::BOUND, || !common::pid_alive(daemon)),
            "{role}: the middle's daemon outlived it"
        );
        passed += 1;
    }

    // The escape hatch: a bounded wait leaves a stuck child running (and says so).
    let r = run("bounded");
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert!(
        r.took >= WORK && r.took < WORK + Duration::from_secs(10),
        "{:?}",
        r.took
    );
    assert_eq!(
        r.alive_at_end,
        pids(&r.out, ""),
        "the stuck child was not left running"
    );
    assert!(
        r.err.contains("not waiting any longer for child \"stuck\""),
        "{}",
        r.err
    );
    passed += 1;

    assert!(
        common::child_pids().is_empty(),
        "children left behind: {:?}",
        common::child_pids()
    );
    println!("exit_join: {passed} passed; 0 failed");
}
