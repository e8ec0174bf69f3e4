//! A program that never calls `procactor::init()`: starting a child that must re-execute the
//! binary fails at once, with an error naming the line to add. No child, no hang, no fork bomb.
//! (harness = false: this file's `main` is the program.)

mod common;

use std::time::{Duration, Instant};

use procactor::{Error, Process, StartMethod};

fn double(x: u32) -> u32 {
    x * 2
}

fn main() {
    let mut passed = 0;
    for method in [StartMethod::Spawn, StartMethod::ForkServer] {
        let t = Instant::now();
        match Process::new(double, 1).start_method(method).start() {
            Err(Error::Start { reason, .. }) => {
                assert!(
                    reason.contains("`procactor::init();` as the first line of main"),
                    "{reason}"
                );
            }
            other => panic!("{method:?}: expected a start error, got {other:?}"),
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{method:?}: not at once: {:?}",
            t.elapsed()
        );
        assert!(
            common::child_pids().is_empty(),
            "{method:?}: a child was started anyway"
        );
        passed += 1;
    }
    // Fork needs no re-execution, hence no init().
    let p = Process::new(double, 21)
        .start_method(StartMethod::Fork)
        .start()
        .unwrap();
    assert_eq!(p.join_timeout(common::BOUND).unwrap(), 42);
    passed += 1;
    println!("no_init: {passed} passed; 0 failed");
}
