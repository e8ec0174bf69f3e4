//! 2,000 processes started and joined in sequence leave no zombie and no leaked descriptor.
//! (A file of its own: descriptor counts must not see other tests' pipes.)

mod common;

use procactor::{Connection, Pipe, Process, StartMethod};

procactor::test_support!();

fn add_one(x: u64) -> u64 {
    x + 1
}

fn echo_once(conn: Connection<u64>) {
    let v = conn.recv().unwrap();
    conn.send(v).unwrap();
}

#[test]
fn two_thousand_processes_leave_no_zombie_and_no_descriptor() {
    // Warm up what lives for the whole program (the fork server and its channel).
    for method in [
        StartMethod::Spawn,
        StartMethod::Fork,
        StartMethod::ForkServer,
    ] {
        Process::new(add_one, 0)
            .start_method(method)
            .start()
            .unwrap()
            .join()
            .unwrap();
    }
    let fds_before = common::open_fds();
    let children_before = common::child_pids().len();

    for i in 0..2000u64 {
        let method = [
            StartMethod::Spawn,
            StartMethod::Fork,
            StartMethod::ForkServer,
        ][i as usize % 3];
        if i % 10 == 0 {
            // Every tenth one also carries a pipe end, which must be closed on both sides.
            let (a, b) = Pipe::<u64>::duplex().unwrap();
            let p = Process::new(echo_once, b)
                .start_method(method)
                .start()
                .unwrap();
            a.send(i).unwrap();
            assert_eq!(a.recv_timeout(common::BOUND).unwrap(), i);
            p.join_timeout(common::BOUND).unwrap();
        } else {
            let p = Process::new(add_one, i)
                .start_method(method)
                .start()
                .unwrap();
            assert_eq!(p.join_timeout(common::BOUND).unwrap(), i + 1);
        }
    }

    assert_eq!(common::open_fds(), fds_before, "descriptors leaked");
    assert_eq!(
        common::child_pids().len(),
        children_before,
        "zombies or stray children left"
    );
    assert!(procactor::process::active_children().is_empty());
}
