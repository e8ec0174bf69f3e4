//! Children that never reach `procactor::init()` (their `main` takes another path first):
//! `start` fails within its bound, names the missing line, and leaves no process behind. A child
//! that skipped `init()` cannot start children of its own (no fork bomb).
//! (harness = false: this file's `main` is the program, and the children's.)

mod common;

use std::time::{Duration, Instant};

use procactor::{Error, Process};

const ROLE: &str = "LATE_INIT_TEST_ROLE";

fn double(x: u32) -> u32 {
    x * 2
}

fn main() {
    // In the children, these run before init() is reached, as in a program that put work first.
    match std::env::var(ROLE).as_deref() {
        Ok("stall") => {
            std::thread::sleep(Duration::from_secs(600));
            return;
        }
        Ok("exit") => std::process::exit(7),
        Ok("bomb") => {
            let refused = matches!(
                Process::new(double, 1).start(),
                Err(Error::Start { ref reason, .. }) if reason.contains("fork bomb")
            );
            std::process::exit(if refused { 42 } else { 43 });
        }
        _ => {}
    }
    procactor::init();
    let mut passed = 0;

    // A child stuck before init(): killed at the deadline, and reported.
    std::env::set_var(ROLE, "stall");
    let t = Instant::now();
    let err = Process::new(double, 1)
        .start_timeout(Duration::from_secs(2))
        .start()
        .unwrap_err();
    let took = t.elapsed();
    let Error::Start { reason, .. } = err else {
        panic!("expected Start, got {err:?}")
    };
    assert!(
        reason.contains("did not call procactor::init() within 2s"),
        "{reason}"
    );
    assert!(
        reason.contains("make `procactor::init();` the first line of main"),
        "{reason}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    passed += 1;

    // A child that ends before init(): reported at once, with its exit status.
    std::env::set_var(ROLE, "exit");
    let t = Instant::now();
    let err = Process::new(double, 1).start().unwrap_err();
    let Error::Start { reason, .. } = err else {
        panic!("expected Start, got {err:?}")
    };
    assert!(
        reason.contains("before calling procactor::init()") && reason.contains("Code(7)"),
        "{reason}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    passed += 1;

    // A child that skipped init() and tries to start its own children is refused.
    std::env::set_var(ROLE, "bomb");
    let err = Process::new(double, 1).start().unwrap_err();
    let Error::Start { reason, .. } = err else {
        panic!("expected Start, got {err:?}")
    };
    assert!(
        reason.contains("Code(42)"),
        "the child was not refused: {reason}"
    );
    passed += 1;

    std::env::remove_var(ROLE);
    assert!(
        common::child_pids().is_empty(),
        "children left behind: {:?}",
        common::child_pids()
    );
    let p = Process::new(double, 4).start().unwrap();
    assert_eq!(p.join_timeout(common::BOUND).unwrap(), 8);
    passed += 1;
    println!("late_init: {passed} passed; 0 failed");
}
