//! A child's `log` records reach the parent's logger, tagged with the child's name and pid.
//! (A file of its own: the logger is global to the test process.)

mod common;

use std::sync::Mutex;

use procactor::{Process, StartMethod};

procactor::test_support!();

struct Capture(Mutex<Vec<(log::Level, String, String)>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        self.0
            .lock()
            .unwrap()
            .push((r.level(), r.target().to_string(), r.args().to_string()));
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

fn capture() -> &'static Capture {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&CAPTURE).unwrap();
        log::set_max_level(log::LevelFilter::Info);
    });
    &CAPTURE
}

fn chatty(n: u32) -> u32 {
    log::info!(target: "chatty", "hello number {n}");
    log::warn!("careful");
    log::debug!("too verbose: filtered out by the parent's level");
    n
}

#[test]
fn child_records_reach_the_parent_logger_tagged_before_join_returns() {
    capture();
    for (i, method) in [StartMethod::Spawn, StartMethod::ForkServer]
        .into_iter()
        .enumerate()
    {
        let p = Process::new(chatty, i as u32)
            .name(format!("talker-{i}"))
            .start_method(method)
            .start()
            .unwrap();
        let pid = p.pid();
        p.join_timeout(common::BOUND).unwrap();
        // No waiting: join drains the records first.
        let got = CAPTURE.0.lock().unwrap().clone();
        let tag = format!("[talker-{i} pid {pid}]");
        let mine: Vec<_> = got.iter().filter(|(_, _, m)| m.starts_with(&tag)).collect();
        assert_eq!(mine.len(), 2, "{method:?}: {got:?}");
        assert_eq!(
            mine[0],
            &(
                log::Level::Info,
                "chatty".to_string(),
                format!("{tag} hello number {i}")
            )
        );
        assert_eq!(mine[1].0, log::Level::Warn);
        assert_eq!(mine[1].2, format!("{tag} careful"));
        assert_eq!(mine[1].1, "logs", "the child's own target is kept");
    }
}

fn noop(_: ()) {}

#[test]
fn forking_a_process_with_other_threads_logs_a_warning() {
    let capture = capture();
    // This test binary runs tests on threads; add one more that surely lives during the fork.
    let (stop, parked) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || parked.recv_timeout(common::BOUND));
    let p = Process::new(noop, ())
        .start_method(StartMethod::Fork)
        .start()
        .unwrap();
    p.join_timeout(common::BOUND).unwrap();
    stop.send(()).unwrap();
    let _ = other.join();
    let got = capture.0.lock().unwrap().clone();
    let warning = got
        .iter()
        .find(|(_, target, _)| target == "procactor::bootstrap");
    let (level, _, message) = warning.expect("a fork-safety warning");
    assert_eq!(*level, log::Level::Warn);
    assert!(
        message.contains("other threads") && message.contains("ForkServer"),
        "{message}"
    );
}
