//! `procactor::connection`: Listener, Client and wait, between procactor peers. Encrypted and
//! plaintext links, TCP, Unix paths and abstract names, wrong keys, garbage and oversized
//! frames from raw sockets, a thousand clients that never speak, a peer killed or stopped, a
//! connection that moves to a child process. Every wait is bounded. (CPython peers:
//! tests/cpython_interop.rs.)

mod common;

procactor::test_support!();

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{reaped, BOUND};
use procactor::connection::{wait_timeout, Address, Client, Listener};
use procactor::{Connection, Error, Pipe, Process};

const KEY: &[u8] = b"connection tests";

fn tcp_port(l: &Listener) -> u16 {
    match l.address() {
        Address::Tcp(a) => a.port(),
        other => panic!("not TCP: {other}"),
    }
}

/// A listener and a connected pair through it: (client side, server side).
fn pair<T: 'static>(listener: &Listener, client: Client) -> (Connection<T>, Connection<T>) {
    let t = std::thread::spawn(move || client.connect::<T>());
    let server = listener.accept_timeout::<T>(BOUND).unwrap();
    (t.join().unwrap().unwrap(), server)
}

fn tcp_pair<T: 'static>(plaintext: bool) -> (Connection<T>, Connection<T>, Listener) {
    let mut l = Listener::bind("127.0.0.1:0").unwrap().authkey(KEY);
    let mut c = Client::new(l.address()).authkey(KEY).timeout(BOUND);
    if plaintext {
        l = l.plaintext();
        c = c.plaintext();
    }
    let (a, b) = pair(&l, c);
    (a, b, l)
}

#[test]
fn typed_values_and_bytes_both_ways_encrypted_and_plaintext() {
    for plaintext in [false, true] {
        let (a, b, _l) = tcp_pair::<(u32, String)>(plaintext);
        a.send((1, "one".into())).unwrap();
        assert_eq!(b.recv_timeout(BOUND).unwrap(), (1, "one".to_string()));
        b.send((2, "two".into())).unwrap();
        assert_eq!(a.recv_timeout(BOUND).unwrap(), (2, "two".to_string()));
        a.send_bytes(b"").unwrap();
        assert_eq!(b.recv_bytes_timeout(BOUND).unwrap(), b"");
        let big = vec![0x5au8; 16 << 20];
        let sender = {
            let big = big.clone();
            let a = a.try_clone().unwrap();
            std::thread::spawn(move || a.send_bytes(&big))
        };
        assert_eq!(b.recv_bytes_timeout(BOUND).unwrap(), big);
        sender.join().unwrap().unwrap();
        // Raw bytes are not a value: said so, and the connection goes on.
        a.send_bytes(b"raw").unwrap();
        assert!(matches!(b.recv_timeout(BOUND), Err(Error::Decode { .. })));
        a.send((3, "three".into())).unwrap();
        assert_eq!(b.recv_timeout(BOUND).unwrap().0, 3);
    }
}

#[test]
fn another_type_is_a_decode_error_not_a_garbled_value() {
    let l = Listener::bind("127.0.0.1:0").unwrap().authkey(KEY);
    let c = Client::new(l.address()).authkey(KEY);
    let t = std::thread::spawn(move || c.connect::<u64>());
    let server = l.accept_timeout::<String>(BOUND).unwrap();
    let client = t.join().unwrap().unwrap();
    client.send(7).unwrap();
    let e = server.recv_timeout(BOUND).unwrap_err();
    assert!(matches!(e, Error::Decode { .. }), "{e}");
}

#[test]
fn a_wrong_key_is_refused_on_both_sides_before_any_payload() {
    for plaintext in [false, true] {
        let mut l = Listener::bind("127.0.0.1:0").unwrap().authkey(KEY);
        let mut c = Client::new(l.address()).authkey(b"wrong").timeout(BOUND);
        if plaintext {
            l = l.plaintext();
            c = c.plaintext();
        }
        let t = std::thread::spawn(move || c.connect::<u8>());
        assert!(l
            .accept_timeout::<u8>(Duration::from_millis(500))
            .unwrap_err()
            .is_timeout());
        let e = t.join().unwrap().unwrap_err();
        assert!(matches!(e, Error::Authentication(_)), "{e}");
    }
}

#[test]
fn mismatched_protocols_say_which_to_use() {
    let sealed = Listener::bind("127.0.0.1:0").unwrap().authkey(KEY);
    let c = Client::new(sealed.address()).authkey(KEY).plaintext();
    let t = std::thread::spawn(move || c.connect::<u8>());
    let _ = sealed.accept_timeout::<u8>(Duration::from_millis(300));
    let e = t.join().unwrap().unwrap_err();
    assert!(
        matches!(&e, Error::Authentication(w) if w.contains("without `plaintext()`")),
        "{e}"
    );

    let plain = Listener::bind("127.0.0.1:0")
        .unwrap()
        .authkey(KEY)
        .plaintext();
    let c = Client::new(plain.address()).authkey(KEY);
    let t = std::thread::spawn(move || c.connect::<u8>());
    let _ = plain.accept_timeout::<u8>(Duration::from_millis(300));
    let e = t.join().unwrap().unwrap_err();
    assert!(
        matches!(&e, Error::Authentication(w) if w.contains("with `plaintext()`")),
        "{e}"
    );
}

#[test]
fn tcp_needs_an_authkey_unix_sockets_need_our_user() {
    let l = Listener::bind("127.0.0.1:0").unwrap();
    assert!(matches!(
        l.accept_timeout::<u8>(Duration::ZERO),
        Err(Error::Unsupported(_))
    ));
    assert!(matches!(
        Client::new(l.address()).connect::<u8>(),
        Err(Error::Unsupported(_))
    ));
    // A Unix path and an abstract name, without a key: our own user is let in.
    let dir = std::env::temp_dir().join(format!("procactor-conn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sock");
    let name = format!("@procactor-conn-test-{}", std::process::id());
    for address in [path.to_string_lossy().into_owned(), name] {
        let l = Listener::bind(address.as_str()).unwrap();
        assert!(
            Listener::bind(address.as_str()).is_err(),
            "{address} rebound"
        );
        let (a, b) = pair::<String>(&l, Client::new(address.as_str()).timeout(BOUND));
        a.send("over unix".into()).unwrap();
        assert_eq!(b.recv_timeout(BOUND).unwrap(), "over unix");
    }
    assert!(!path.exists(), "a Unix listener removes its socket file");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_peer_gone_is_disconnected_and_timeouts_are_honoured() {
    let (a, b, _l) = tcp_pair::<u8>(false);
    let t = Instant::now();
    assert!(b
        .recv_timeout(Duration::from_millis(50))
        .unwrap_err()
        .is_timeout());
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert!(matches!(b.try_recv(), Err(Error::Empty)));
    assert!(!b.poll(Duration::ZERO).unwrap());
    drop(a);
    assert!(b.poll(BOUND).unwrap());
    assert!(matches!(b.recv_timeout(BOUND), Err(Error::Disconnected)));
}

#[test]
fn a_large_message_read_in_timeouts_is_whole_and_nothing_is_lost() {
    let (a, b, _l) = tcp_pair::<()>(false);
    let big: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 251) as u8).collect();
    let expect = big.clone();
    let sender = std::thread::spawn(move || {
        a.send_bytes(&big).unwrap();
        a.send_bytes(b"after").unwrap();
        a
    });
    let deadline = Instant::now() + BOUND;
    let got = loop {
        match b.recv_bytes_timeout(Duration::from_micros(200)) {
            Ok(v) => break v,
            Err(e) if e.is_timeout() && Instant::now() < deadline => {}
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(got, expect);
    assert_eq!(b.recv_bytes_timeout(BOUND).unwrap(), b"after");
    drop(sender.join().unwrap());
}

/// Raw bytes to a listener: what a hostile or confused client can send.
fn raw(l: &Listener) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", tcp_port(l))).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    s
}

#[test]
fn garbage_silence_and_oversized_handshakes_hold_up_nobody() {
    let l = Listener::bind("127.0.0.1:0")
        .unwrap()
        .authkey(KEY)
        .handshake_timeout(Duration::from_secs(2));
    // A thousand clients that connect and never speak.
    let silent: Vec<TcpStream> = (0..1000).map(|_| raw(&l)).collect();
    // Garbage, a frame header announcing 2 GiB, and a client that leaves mid-handshake.
    let mut garbage = raw(&l);
    garbage.write_all(&[0xff; 64]).unwrap();
    let mut huge = raw(&l);
    huge.write_all(&0x7fff_fff0u32.to_be_bytes()).unwrap();
    drop(raw(&l));
    // A real client is served at once all the same.
    let started = Instant::now();
    let (a, b) = pair::<u8>(&l, Client::new(l.address()).authkey(KEY).timeout(BOUND));
    a.send(1).unwrap();
    assert_eq!(b.recv_timeout(BOUND).unwrap(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "served after {:?}",
        started.elapsed()
    );
    // The silent ones are dropped at their deadline.
    let deadline = Instant::now() + BOUND;
    loop {
        let _ = l.accept_timeout::<u8>(Duration::from_millis(100));
        if l.pending_handshakes() == 0 || Instant::now() > deadline {
            break;
        }
    }
    assert_eq!(l.pending_handshakes(), 0);
    drop(silent);
}

#[test]
fn garbage_after_the_handshake_and_oversized_frames_are_errors_not_allocations() {
    // A plaintext link: a raw client that passes CPython's challenge then sends a 1 TiB header.
    let l = Listener::bind("127.0.0.1:0")
        .unwrap()
        .authkey(KEY)
        .plaintext()
        .max_message_size(1 << 20);
    let (a, b) = pair::<u8>(
        &l,
        Client::new(l.address())
            .authkey(KEY)
            .plaintext()
            .timeout(BOUND),
    );
    a.send_bytes(&vec![0; 2 << 20]).unwrap();
    let e = b.recv_bytes_timeout(BOUND).unwrap_err();
    assert!(
        matches!(e, Error::TooLarge { size, limit: 1_048_576 } if size == 2 << 20),
        "{e}"
    );

    // An encrypted link: bytes that are not a sealed message fail to open.
    let (a, b, _l) = tcp_pair::<u8>(false);
    let fd = std::os::fd::AsFd::as_fd(&a).try_clone_to_owned().unwrap();
    let mut forged = TcpStream::from(fd);
    forged.write_all(&40u64.to_be_bytes()).unwrap();
    forged.write_all(&[0xab; 40]).unwrap();
    let e = b.recv_timeout(BOUND).unwrap_err();
    assert!(matches!(e, Error::Authentication(_)), "{e}");
}

fn echo_child(conn: Connection<String>) -> usize {
    let mut n = 0;
    while let Ok(s) = conn.recv_timeout(Duration::from_secs(30)) {
        if conn.send(s.to_uppercase()).is_err() {
            break;
        }
        n += 1;
    }
    n
}

#[test]
fn an_encrypted_connection_moves_to_a_child_and_the_parents_handle_is_retired() {
    let (client, server, _l) = tcp_pair::<String>(false);
    client.send("before".into()).unwrap();
    assert_eq!(server.recv_timeout(BOUND).unwrap(), "before");
    let child = reaped(
        Process::new(echo_child, server.try_clone().unwrap())
            .start()
            .unwrap(),
    );
    // Moved: the handle (and its clones) here may no longer use it.
    assert!(matches!(
        server.send("x".into()),
        Err(Error::InvalidState(_))
    ));
    for word in ["one", "two", "three"] {
        client.send(word.into()).unwrap();
        assert_eq!(client.recv_timeout(BOUND).unwrap(), word.to_uppercase());
    }
    drop(client);
    assert_eq!(child.join_timeout(BOUND).unwrap(), 3);
}

fn hold(conn: Connection<u8>) {
    let _keep = conn;
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_peer_killed_is_disconnected_and_a_stopped_one_is_a_timeout() {
    let (client, server, _l) = tcp_pair::<u8>(false);
    let child = reaped(Process::new(hold, server).start().unwrap());
    let pid = rustix::process::Pid::from_raw(child.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    let t = Instant::now();
    assert!(client
        .recv_timeout(Duration::from_millis(100))
        .unwrap_err()
        .is_timeout());
    assert!(t.elapsed() < Duration::from_secs(5));
    child.kill().unwrap();
    assert!(matches!(
        client.recv_timeout(BOUND),
        Err(Error::Disconnected)
    ));
}

#[test]
fn descriptors_do_not_cross_a_network_connection() {
    let (a, _b, _l) = tcp_pair::<Connection<u8>>(false);
    let (x, _y) = procactor::Pipe::<u8>::duplex().unwrap();
    assert!(matches!(a.send(x), Err(Error::Unsupported(_))));
}

fn nap(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[test]
fn wait_reports_connections_listeners_and_processes_that_are_ready() {
    let l = Listener::bind("127.0.0.1:0").unwrap().authkey(KEY);
    let (a, b, _l2) = tcp_pair::<u8>(false);
    let (p1, p2) = procactor::Pipe::<u8>::duplex().unwrap();
    assert!(wait_timeout(&[&l, &b, &p2], Duration::ZERO)
        .unwrap()
        .is_empty());
    let t = Instant::now();
    assert!(wait_timeout(&[&l, &b, &p2], Duration::from_millis(50))
        .unwrap()
        .is_empty());
    assert!(t.elapsed() >= Duration::from_millis(50));
    a.send(1).unwrap();
    p1.send(2).unwrap();
    let mut ready = Vec::new();
    let deadline = Instant::now() + BOUND;
    while ready != [1, 2] && Instant::now() < deadline {
        ready = wait_timeout(&[&l, &b, &p2], BOUND).unwrap();
    }
    assert_eq!(ready, [1, 2]);
    let c = Client::new(l.address()).authkey(KEY);
    let t = std::thread::spawn(move || c.connect::<u8>());
    assert_eq!(wait_timeout(&[&l], BOUND).unwrap(), [0]);
    drop(l.accept_timeout::<u8>(BOUND).unwrap());
    drop(t.join().unwrap());
    let p = reaped(Process::new(nap, 30).start().unwrap());
    assert_eq!(wait_timeout(&[&p.0], BOUND).unwrap(), [0]);
}

// Regressions from an attack on this layer (each failed before its fix).

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A raw writer on the same socket as `c` (what the peer, or a man in the middle, can send).
fn forge<T>(c: &Connection<T>) -> TcpStream {
    TcpStream::from(c.as_fd().try_clone_to_owned().unwrap())
}

#[test]
fn a_refused_send_of_a_network_connection_leaves_it_usable() {
    let (carrier, _far, _l1) = tcp_pair::<Connection<u8>>(false);
    let (a, b, _l2) = tcp_pair::<u8>(false);
    let e = carrier.send(a.clone()).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    a.send(7).unwrap();
    assert_eq!(b.recv_timeout(BOUND).unwrap(), 7);
}

#[test]
fn an_unlimited_receiver_refuses_impossible_lengths_without_panicking() {
    // Plaintext: `-1` and a u64::MAX length; sealed: a u64::MAX length.
    for (plaintext, header) in [(true, vec![0xff; 12]), (false, vec![0xff; 8])] {
        let (a, b, _l) = tcp_pair::<u8>(plaintext);
        let b = b.with_max_message_size(u64::MAX);
        forge(&a).write_all(&header).unwrap();
        let got = std::thread::spawn(move || {
            let first = b.recv_bytes_timeout(BOUND).map(|v| v.len());
            // The connection is closed after what it could not take: no spin on it either.
            let again = b.recv_bytes_timeout(BOUND);
            (
                first,
                again.is_err(),
                wait_timeout(&[&b], Duration::ZERO).unwrap(),
            )
        })
        .join()
        .expect("recv panicked on a peer's frame header");
        assert!(got.0.is_err() && got.1, "{got:?}");
    }
}

#[test]
fn an_unbounded_handshake_timeout_is_taken() {
    let l = Listener::bind("127.0.0.1:0")
        .unwrap()
        .authkey(KEY)
        .handshake_timeout(Duration::MAX);
    let _s = raw(&l);
    let e = std::thread::spawn(move || l.accept_timeout::<u8>(Duration::from_millis(200)))
        .join()
        .expect("accept_timeout panicked")
        .unwrap_err();
    assert!(e.is_timeout());
}

#[test]
fn accept_timeout_is_honoured_while_another_thread_accepts() {
    let l = Arc::new(Listener::bind("127.0.0.1:0").unwrap().authkey(KEY));
    let stop = Arc::new(AtomicBool::new(false));
    let hog = {
        let (l, stop) = (l.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = l.accept_timeout::<u8>(Duration::from_secs(2));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        let e = l
            .accept_timeout::<u8>(Duration::from_millis(30))
            .unwrap_err();
        assert!(e.is_timeout());
        worst = worst.max(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    hog.join().unwrap();
    // Before the fix: the wait for the other thread's turn had no deadline (100-250 ms).
    assert!(
        worst < Duration::from_millis(90),
        "accept_timeout(30 ms) took {worst:?}"
    );
}

#[test]
fn a_sender_queued_behind_a_hand_over_never_seals_under_the_moved_nonces() {
    const BIG: usize = 4 << 20;
    for round in 0..10 {
        let (x, y, _l) = tcp_pair::<u8>(false);
        let x0 = x.clone();
        let t0 = std::thread::spawn(move || x0.send_bytes(&vec![1u8; BIG]));
        std::thread::sleep(Duration::from_millis(50));
        let x1 = x.clone();
        let t1 = std::thread::spawn(move || x1.send_bytes(&[0x22u8; 10]));
        std::thread::sleep(Duration::from_millis(20));
        // Drain the peer's socket raw, and race the queued sender with a hand-over.
        let mut sink = forge(&y);
        sink.set_nonblocking(false).unwrap(); // (the socket's flags are shared with `y`'s)
        sink.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let drain = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 1 << 16];
            while let Ok(n) = sink.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf
        });
        let (pa, pb) = Pipe::<Connection<u8>>::duplex().unwrap();
        let end = Instant::now() + BOUND;
        let moved = loop {
            match pa.send(x.clone()) {
                Ok(()) => break pb.recv_timeout(BOUND).unwrap(),
                Err(_) if Instant::now() < end => std::hint::spin_loop(),
                Err(e) => panic!(
                    "{e} (t0 done: {}, t1 done: {})",
                    t0.is_finished(),
                    t1.is_finished()
                ),
            }
        };
        t0.join().unwrap().unwrap();
        let queued = t1.join().unwrap();
        moved.send_bytes(&[0x33u8; 5]).unwrap();
        drop((moved, x, y));
        let wire = drain.join().unwrap();
        // The queued send either went before the hand-over (then the moved end's message is
        // the third) or was refused; never both sealed under one nonce.
        let first = 8 + BIG + 16;
        match queued {
            Ok(()) => {
                let c1 = &wire[first + 8..][..10];
                let c2 = &wire[first + 8 + 10 + 16 + 8..][..5];
                let xor: Vec<u8> = c1.iter().zip(c2).map(|(a, b)| a ^ b).collect();
                assert_ne!(xor, [0x22 ^ 0x33; 5], "round {round}: a nonce used twice");
            }
            Err(e) => {
                assert!(matches!(e, Error::InvalidState(_)), "round {round}: {e}");
                assert_eq!(wire.len(), first + 8 + 5 + 16, "round {round}");
            }
        }
    }
}

#[test]
fn a_send_to_a_peer_that_stopped_reading_times_out_and_a_torn_one_closes_the_link() {
    let (a, _b, _l) = tcp_pair::<u8>(false);
    let t = Instant::now();
    let e = a
        .send_bytes_timeout(&vec![0u8; 16 << 20], Duration::from_millis(300))
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    // (Sealing 16 MiB is work, not a wait: it takes seconds in a debug build.)
    assert!(t.elapsed() < BOUND);
    // Half a message went: the link is closed rather than left to a peer reading a torn one.
    assert!(matches!(a.send(1), Err(Error::InvalidState(_))));
}

#[test]
fn a_connect_flood_does_not_keep_accept_timeout_past_its_deadline() {
    let l = Listener::bind("127.0.0.1:0").unwrap().authkey(KEY);
    let port = tcp_port(&l);
    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = TcpStream::connect(("127.0.0.1", port));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let _ = l.accept_timeout::<u8>(Duration::from_millis(20));
        worst = worst.max(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        f.join().unwrap();
    }
    assert!(
        worst < Duration::from_millis(100),
        "accept_timeout(20 ms) took {worst:?}"
    );
}
