//! A flood of silent connections at the usual descriptor limit (1024) must neither wedge a
//! `Listener` (every accept failing with EMFILE) nor leave the process out of descriptors: the
//! handshakes in progress are capped below the limit, and expire. Its own file: it lowers this
//! process's descriptor limit.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{reaped, BOUND};
use procactor::connection::{Address, Listener};
use procactor::{Pipe, Process};

procactor::test_support!();

/// The attacker, in a process of its own: `n` connections that never speak, held until told.
fn silent_clients(
    (port, n, ready, done): (
        u16,
        usize,
        procactor::Connection<usize>,
        procactor::Connection<()>,
    ),
) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid struct: the soft limit up to the hard one.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(8192);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let held: Vec<TcpStream> = (0..n)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    ready.send(held.len()).unwrap();
    let _ = done.recv_timeout(BOUND);
}

#[test]
fn silent_clients_at_the_descriptor_limit_neither_wedge_the_listener_nor_exhaust_the_process() {
    let l = Listener::bind("127.0.0.1:0")
        .unwrap()
        .authkey(b"k")
        .handshake_timeout(Duration::from_secs(1));
    let Address::Tcp(addr) = l.address().clone() else {
        unreachable!()
    };
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid struct; the hard limit is kept.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = 1024.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    let (ready_rx, ready_tx) = Pipe::<usize>::simplex().unwrap();
    let (done_rx, done_tx) = Pipe::<()>::simplex().unwrap();
    let _attacker = reaped(
        Process::new(silent_clients, (addr.port(), 1100, ready_tx, done_rx))
            .start()
            .unwrap(),
    );
    // Accept while the attacker connects (past the backlog, its connects wait for us).
    let mut errors = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        match l.accept_timeout::<u8>(Duration::from_millis(200)) {
            Err(e) if e.is_timeout() => {}
            Err(e) => errors.push(e.to_string()),
            Ok(_) => panic!("nobody with the key connected"),
        }
    }
    let connected = ready_rx.recv_timeout(BOUND).unwrap();
    assert!(
        connected >= 1000,
        "the attacker made only {connected} connections"
    );
    // The process still has descriptors to spare, and the listener answers.
    assert!(
        Pipe::<u8>::duplex().is_ok(),
        "the process is out of descriptors"
    );
    assert!(
        errors.is_empty(),
        "accept_timeout failed: {:?}",
        errors.first()
    );
    assert!(
        l.pending_handshakes() <= 256,
        "{} handshakes pending",
        l.pending_handshakes()
    );
    done_tx.send(()).unwrap();
}
