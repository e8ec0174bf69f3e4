//! Per-process state: every cell the runtime keeps is listed in one place, and a forked child
//! gets fresh state in each of them (never its parent's children, connections, threads or
//! locks), even when the parent was busy with them as it forked.

mod common;

use std::time::Duration;

use common::bounded;
use procactor::{Process, StartMethod};
use procactor_os::per_process::{runtime_threads, states, touch_all};

procactor::test_support!();

/// The cells every runtime has: each module's state, declared with `per_process!`.
const EXPECTED: [&str; 12] = [
    "procactor_os::closer::CLOSER",
    "procactor_os::per_process::THREADS",
    "procactor_runtime::actor::actor_ref::CONNS",
    "procactor_runtime::actor::client::FLUSHER",
    "procactor_runtime::actor::client::LINGERING",
    "procactor_runtime::bootstrap::forkserver::SERVER",
    "procactor_runtime::exit::EXIT_HOOKS",
    "procactor_runtime::exit::LAST_HOOKS",
    "procactor_runtime::identity::CHILD",
    "procactor_runtime::logs::COLLECTOR",
    "procactor_runtime::logs::FORWARD_TO",
    "procactor_runtime::process::CHILDREN",
];

/// Runs in a forked child: what the cells and the thread list say before and after each is used
/// once here.
fn report(_: ()) -> (u32, Vec<Cell>, usize, Vec<Cell>) {
    let before = cells();
    let threads = runtime_threads().len();
    touch_all();
    (std::process::id(), before, threads, cells())
}

/// A cell's name and owner, as a child reports them.
type Cell = (String, Option<u32>);

fn cells() -> Vec<Cell> {
    states()
        .into_iter()
        .map(|s| (s.name.to_string(), s.owner))
        .collect()
}

#[test]
fn every_cell_is_listed_once() {
    let names: Vec<&str> = states().iter().map(|s| s.name).collect();
    for want in EXPECTED {
        assert_eq!(
            names.iter().filter(|n| **n == want).count(),
            1,
            "{want} in {names:?}"
        );
    }
}

#[test]
fn a_forked_child_starts_with_fresh_state_in_every_cell() {
    bounded(|| {
        // The parent uses its state first: a child process, a runtime thread (the closer).
        let warm = Process::new(|x: u32| x + 1, 1).start().unwrap();
        assert_eq!(warm.join().unwrap(), 2);
        procactor_os::closer::close_later([std::fs::File::open("/dev/null").unwrap().into()]);
        let parent = std::process::id();
        assert!(states()
            .iter()
            .any(|s| s.name.ends_with("::CHILDREN") && s.owner == Some(parent)));
        assert!(!runtime_threads().is_empty());

        let p = Process::new(report, ())
            .start_method(StartMethod::Fork)
            .start()
            .unwrap();
        let (child, before, threads, after) = p.join_timeout(Duration::from_secs(30)).unwrap();
        assert_ne!(child, parent);
        // The child saw no thread of its parent's as its own.
        assert_eq!(threads, 0, "runtime threads listed in a fresh fork");
        // Every cell holds the child's own state once used there; none its parent's.
        assert_eq!(after.len(), before.len());
        for (name, owner) in &after {
            assert_eq!(*owner, Some(child), "{name} after a use in the child");
        }
    });
}

#[test]
fn a_fork_while_another_thread_holds_the_cells_does_not_deadlock_the_child() {
    bounded(|| {
        // A thread of the parent keeps using every cell as the child is forked: an inherited
        // lock held by a thread that does not exist in the child would hang it for ever.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    touch_all();
                }
            })
        };
        for _ in 0..20 {
            let p = Process::new(report, ())
                .start_method(StartMethod::Fork)
                .start()
                .unwrap();
            let (child, _, _, after) = p.join_timeout(Duration::from_secs(30)).unwrap();
            assert!(after.iter().all(|(_, owner)| *owner == Some(child)));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        busy.join().unwrap();
    });
}
