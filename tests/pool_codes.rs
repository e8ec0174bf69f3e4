//! A pool names each task's code to a worker once, then by index (`RunCode`). The index tables of
//! the pool and of each worker must stay in step even when the pool takes a batch back from one
//! worker and gives it to another: a worker that met an index it never got would die, and the
//! pool would replace it. Many small tasks on two workers, with three functions, make batches
//! move between workers; no worker may be replaced, and every result must be right.

mod common;

use std::sync::Mutex;

use common::bounded;
use procactor::Pool;

procactor::test_support!();

/// Warnings the runtime logged in this process.
static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            WARNINGS
                .lock()
                .unwrap()
                .push(format!("{}: {}", r.target(), r.args()));
        }
    }
    fn flush(&self) {}
}

fn square(x: u64) -> u64 {
    x * x
}

fn double(x: u64) -> u64 {
    x * 2
}

fn triple(x: u64) -> u64 {
    x * 3
}

/// Holds its worker a moment, so that the batches queued behind it are taken back and given to
/// the other worker.
fn slow(x: u64) -> u64 {
    std::thread::sleep(std::time::Duration::from_millis(20));
    x
}

#[test]
fn code_tables_stay_in_step_while_batches_move_between_workers() {
    log::set_logger(&Capture).expect("the only logger of this test binary");
    log::set_max_level(log::LevelFilter::Warn);
    bounded(|| {
        let pool = Pool::new(2).unwrap();
        let mut workers = std::collections::BTreeSet::new();
        for round in 0..20u64 {
            let held = pool.apply_async(slow, round).unwrap();
            let asked: Vec<_> = (0..500u64)
                .map(|i| match i % 3 {
                    0 => pool.apply_async(square, i),
                    1 => pool.apply_async(double, i),
                    _ => pool.apply_async(triple, i),
                })
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(held.get().unwrap(), round);
            workers.extend(common::child_pids());
            for (i, r) in (0..500u64).zip(asked) {
                let want = match i % 3 {
                    0 => i * i,
                    1 => i * 2,
                    _ => i * 3,
                };
                assert_eq!(r.get().unwrap(), want, "round {round}, task {i}");
            }
        }
        let mapped = pool.map(square, 0..2000u64).unwrap();
        assert!(mapped.iter().enumerate().all(|(i, &v)| v == (i * i) as u64));
        workers.extend(common::child_pids());
        // This test binary has no other children: more than two pids means a worker was
        // replaced (a worker that ends on a pool error exits quietly, with code 0).
        assert!(workers.len() <= 2, "workers were replaced: {workers:?}");
    });
    let warnings = WARNINGS.lock().unwrap();
    assert!(
        warnings.iter().all(|w| !w.contains("replacing")),
        "a worker died: {warnings:?}"
    );
}
