//! Pipes between real processes: sizes from 0 bytes to 256 MiB, order, disconnection, garbage,
//! wrong types, timeouts, and handles travelling inside messages.

mod common;

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use common::{reaped, BOUND};
use procactor::{Connection, Error, ExitReason, Pipe, Process, StartMethod};

procactor::test_support!();

/// A payload whose every byte depends on its message's index and size, so that a merged, split,
/// reordered or torn message cannot pass the check.
fn pattern(index: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ index.wrapping_mul(7) ^ len) as u8)
        .collect()
}

const SIZES: [usize; 12] = [
    0,
    1,
    8,
    4095,
    65_535,
    65_536,
    65_537,
    200_000,
    1 << 20,
    (1 << 20) + 3,
    16 << 20,
    256 << 20,
];

fn echo_bytes(conn: Connection<()>) -> usize {
    let mut n = 0;
    while let Ok(b) = conn.recv_bytes() {
        conn.send_bytes(&b).unwrap();
        n += 1;
    }
    n
}

#[test]
fn messages_from_0_bytes_to_256_mib_arrive_whole_and_in_order() {
    let (a, b) = Pipe::<()>::duplex().unwrap();
    let p = reaped(Process::new(echo_bytes, b).start().unwrap());
    for (i, &len) in SIZES.iter().enumerate() {
        let sent = pattern(i, len);
        a.send_bytes(&sent).unwrap();
        let got = a.recv_bytes_timeout(BOUND).unwrap();
        assert_eq!(got.len(), len, "message {i}");
        assert!(got == sent, "message {i} ({len} bytes) came back altered");
    }
    drop(a);
    assert_eq!(p.join_timeout(BOUND).unwrap(), SIZES.len());
}

fn send_many(conn: Connection<Vec<u8>>) {
    for (i, &len) in SIZES[..11].iter().enumerate() {
        conn.send(pattern(i, len)).unwrap();
    }
}

#[test]
fn typed_messages_queue_up_without_merging() {
    let (rx, tx) = Pipe::<Vec<u8>>::simplex().unwrap();
    let p = reaped(Process::new(send_many, tx).start().unwrap());
    // Let the child send everything it can before we read: small ones pile up in the socket.
    std::thread::sleep(Duration::from_millis(100));
    for (i, &len) in SIZES[..11].iter().enumerate() {
        assert!(
            rx.recv_timeout(BOUND).unwrap() == pattern(i, len),
            "message {i}"
        );
    }
    p.join_timeout(BOUND).unwrap();
    assert!(matches!(rx.recv_timeout(BOUND), Err(Error::Disconnected)));
}

fn hold_then_exit(conn: Connection<u8>) {
    let _ = conn.recv();
}

#[test]
fn the_other_end_dropped_or_its_process_dead_is_disconnected_promptly() {
    // Dropped in this process.
    let (a, b) = Pipe::<u8>::duplex().unwrap();
    drop(b);
    assert!(matches!(a.recv_timeout(BOUND), Err(Error::Disconnected)));
    assert!(matches!(a.send(1), Err(Error::Disconnected)));

    // Held by a child that is then killed: every copy dies with it.
    for method in [
        StartMethod::Spawn,
        StartMethod::Fork,
        StartMethod::ForkServer,
    ] {
        let (a, b) = Pipe::<u8>::duplex().unwrap();
        let p = reaped(
            Process::new(hold_then_exit, b)
                .start_method(method)
                .start()
                .unwrap(),
        );
        assert!(
            matches!(a.try_recv(), Err(Error::Empty)),
            "{method:?}: the child holds its end"
        );
        p.kill().unwrap();
        let t = Instant::now();
        assert!(
            matches!(a.recv_timeout(BOUND), Err(Error::Disconnected)),
            "{method:?}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{method:?}: not prompt: {:?}",
            t.elapsed()
        );
        assert!(matches!(
            p.join_timeout(BOUND),
            Err(e) if e.exit_reason() == Some(&ExitReason::Killed { signal: 9 })
        ));
    }
}

fn wait_for_disconnect(conn: Connection<u8>) -> bool {
    matches!(
        conn.recv_timeout(Duration::from_secs(20)),
        Err(Error::Disconnected)
    )
}

#[test]
fn a_forked_child_sees_the_parent_drop_its_end() {
    // A forked child inherits copies of every descriptor; procactor closes the ones it was not
    // given, or this child would hold the parent's end itself and never see the disconnect.
    for method in [
        StartMethod::Fork,
        StartMethod::Spawn,
        StartMethod::ForkServer,
    ] {
        let (a, b) = Pipe::<u8>::duplex().unwrap();
        let p = reaped(
            Process::new(wait_for_disconnect, b)
                .start_method(method)
                .start()
                .unwrap(),
        );
        drop(a);
        assert!(p.join_timeout(BOUND).unwrap(), "{method:?}");
    }
}

fn read_as_string(conn: Connection<String>) -> (String, u64) {
    let first = match conn.recv() {
        Err(Error::Decode { expected, reason }) => format!("{expected}: {reason}"),
        other => format!("unexpected: {other:?}"),
    };
    // The process keeps working: the next, well-formed message is read normally.
    let raw = Connection::<u64>::from_fd(conn.into_fd());
    (first, raw.recv().unwrap())
}

#[test]
fn an_end_read_as_another_type_is_a_decode_error_and_the_reader_goes_on() {
    let (a, b) = Pipe::<u64>::duplex().unwrap();
    let b: Connection<String> = Connection::from_fd(b.into_fd());
    let p = reaped(Process::new(read_as_string, b).start().unwrap());
    a.send(5).unwrap();
    a.send(6).unwrap();
    let (err, next) = p.join_timeout(BOUND).unwrap();
    assert!(err.starts_with("alloc::string::String: "), "{err}");
    assert!(err.contains("another type"), "{err}");
    assert_eq!(next, 6);
}

fn survive_garbage(conn: Connection<u64>) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        match conn.recv() {
            Ok(v) => {
                seen.push(format!("ok {v}"));
                if v == 99 {
                    return seen;
                }
            }
            Err(Error::Decode { .. }) => seen.push("decode".into()),
            Err(e) => {
                seen.push(format!("other {e}"));
                return seen;
            }
        }
    }
}

#[test]
fn garbage_on_the_socket_is_a_decode_error_and_the_receiver_keeps_working() {
    let (a, b) = Pipe::<u64>::duplex().unwrap();
    let p = reaped(Process::new(survive_garbage, b).start().unwrap());
    let raw = a.as_fd();
    let write =
        |bytes: &[u8]| rustix::net::send(raw, bytes, rustix::net::SendFlags::empty()).unwrap();
    write(b"");
    write(b"\x01");
    write(b"garbage that is no frame at all");
    write(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]); // a frame header, the wrong fingerprint
    write(&[0x81; 17]); // claims a large payload, with no side stream
    a.send_bytes(b"raw bytes where a u64 is expected").unwrap();
    a.send(99).unwrap();
    let seen = p.join_timeout(BOUND).unwrap();
    // Six bad records (an empty one included: not taken for a disconnect), then a good one.
    assert_eq!(
        seen,
        ["decode", "decode", "decode", "decode", "decode", "decode", "ok 99"]
    );
}

#[test]
fn a_valid_frame_with_truncated_value_bytes_is_a_decode_error() {
    // The right fingerprint and a payload too short for the type.
    let (a, b) = Pipe::<(u64, String)>::duplex().unwrap();
    let other: Connection<(u64, String)> = Connection::from_fd(a.into_fd());
    other.send((1, "x".repeat(10))).unwrap();
    let bytes = b.recv_bytes().unwrap();
    other.send_bytes(&bytes[..bytes.len() - 3]).unwrap();
    assert!(matches!(b.recv_timeout(BOUND), Err(Error::Decode { .. })));
}

fn send_huge_forever(conn: Connection<()>) {
    let big = vec![7u8; 512 << 20];
    loop {
        conn.send_bytes(&big).unwrap();
    }
}

#[test]
fn a_child_killed_in_the_middle_of_a_large_send_gives_disconnected_and_killed() {
    let (rx, tx) = Pipe::<()>::simplex().unwrap();
    let p = reaped(Process::new(send_huge_forever, tx).start().unwrap());
    let pid = p.pid();
    let killer = std::thread::spawn(move || {
        // Kill it while the parent is half-way through reading a 512 MiB message.
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let t = Instant::now();
    let mut got = Vec::new();
    let res = loop {
        match rx.recv_bytes_into(&mut got) {
            Ok(n) => assert_eq!(n, 512 << 20, "a whole message, or nothing"),
            Err(e) => break e,
        }
        assert!(t.elapsed() < BOUND);
    };
    killer.join().unwrap();
    assert!(matches!(res, Error::Disconnected), "{res:?}");
    assert!(matches!(
        p.join_timeout(BOUND),
        Err(e) if e.exit_reason() == Some(&ExitReason::Killed { signal: 9 })
    ));
}

#[test]
fn timeouts_are_honoured() {
    let (a, b) = Pipe::<u8>::duplex().unwrap();
    for wait in [
        Duration::ZERO,
        Duration::from_millis(50),
        Duration::from_millis(200),
    ] {
        let t = Instant::now();
        // The error names the timeout that was asked for.
        assert!(matches!(b.recv_timeout(wait), Err(Error::Timeout(d)) if d == wait));
        assert!(matches!(b.recv_bytes_timeout(wait), Err(Error::Timeout(d)) if d == wait));
        assert!(!b.poll(wait).unwrap());
        let took = t.elapsed();
        assert!(
            took >= wait * 3 && took < wait * 3 + Duration::from_millis(500),
            "{wait:?}: {took:?}"
        );
    }
    assert!(matches!(b.try_recv(), Err(Error::Empty)));
    a.send(1).unwrap();
    assert!(b.poll(Duration::ZERO).unwrap());
    assert_eq!(b.try_recv().unwrap(), 1);
}

#[test]
fn simplex_ends_refuse_the_wrong_direction() {
    let (rx, tx) = Pipe::<u8>::simplex().unwrap();
    assert!(matches!(rx.send(1), Err(Error::Unsupported(_))));
    assert!(matches!(tx.recv(), Err(Error::Unsupported(_))));
    assert!(matches!(tx.try_recv(), Err(Error::Unsupported(_))));
    tx.send(2).unwrap();
    assert_eq!(rx.recv().unwrap(), 2);
    assert!(rx.readable() && !rx.writable() && tx.writable() && !tx.readable());
    // The direction travels with the end.
    let p = reaped(Process::new(directions, tx).start().unwrap());
    assert_eq!(p.join_timeout(BOUND).unwrap(), (false, true));
}

fn directions(end: Connection<u8>) -> (bool, bool) {
    (end.readable(), end.writable())
}

fn relay(conn: Connection<Connection<String>>) {
    // Receives an end of another pipe inside a message, and uses it.
    let inner = conn.recv().unwrap();
    inner.send("through a passed end".to_string()).unwrap();
}

#[test]
fn connections_travel_inside_messages() {
    let (outer_a, outer_b) = Pipe::<Connection<String>>::duplex().unwrap();
    let (inner_a, inner_b) = Pipe::<String>::duplex().unwrap();
    let p = reaped(Process::new(relay, outer_b).start().unwrap());
    outer_a.send(inner_b).unwrap();
    assert_eq!(inner_a.recv_timeout(BOUND).unwrap(), "through a passed end");
    p.join_timeout(BOUND).unwrap();
    // Every copy of the inner end is gone now: the child's, and ours (moved into the send).
    assert!(matches!(
        inner_a.recv_timeout(BOUND),
        Err(Error::Disconnected)
    ));
}

#[test]
fn an_end_of_the_wrong_type_inside_a_message_is_refused() {
    let (a, b) = Pipe::<Connection<u64>>::duplex().unwrap();
    let b: Connection<Connection<String>> = Connection::from_fd(b.into_fd());
    let (x, _y) = Pipe::<u64>::duplex().unwrap();
    a.send(x).unwrap();
    assert!(matches!(b.recv_timeout(BOUND), Err(Error::Decode { .. })));
}

#[test]
fn an_end_is_shared_by_threads() {
    let (a, b) = Pipe::<u32>::duplex().unwrap();
    let n = 2000;
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut got = Vec::new();
                    while let Ok(v) = b.recv_timeout(Duration::from_millis(500)) {
                        got.push(v);
                    }
                    got
                })
            })
            .collect();
        for i in 0..n {
            a.send(i).unwrap();
        }
        let mut all: Vec<u32> = readers
            .into_iter()
            .flat_map(|r| r.join().unwrap())
            .collect();
        all.sort();
        assert_eq!(
            all,
            (0..n).collect::<Vec<_>>(),
            "each message read once, none lost"
        );
    });
}

/// Receives a socket's descriptor in a message, and speaks through it.
fn speak_through(conn: Connection<procactor::pipe::Descriptor>) {
    use std::io::Write;
    let d = conn.recv_timeout(BOUND).unwrap();
    let mut s = std::os::unix::net::UnixStream::from(d.into_owned());
    s.write_all(b"through a sent socket").unwrap();
}

#[test]
fn any_descriptor_travels_in_a_message_and_arrives_usable() {
    use procactor::pipe::Descriptor;
    use std::io::Read;
    let (mut mine, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let (a, b) = Pipe::<Descriptor>::duplex().unwrap();
    let p = reaped(Process::new(speak_through, b).start().unwrap());
    a.send(Descriptor::new(theirs)).unwrap();
    p.join_timeout(BOUND).unwrap();
    // The child's copy is closed with the child, ours with the sent value: end of stream.
    let mut got = String::new();
    mine.set_read_timeout(Some(BOUND)).unwrap();
    mine.read_to_string(&mut got).unwrap();
    assert_eq!(got, "through a sent socket");
    // Not across hosts: a network connection refuses it, and stays usable.
    let listener = procactor::connection::Listener::bind("127.0.0.1:0")
        .unwrap()
        .authkey(b"k");
    let client = procactor::connection::Client::new(listener.address()).authkey(b"k");
    let t = std::thread::spawn(move || client.connect::<Descriptor>().unwrap());
    let server = listener.accept::<Descriptor>().unwrap();
    let net = t.join().unwrap();
    let file = Descriptor::new(std::fs::File::open("/dev/null").unwrap());
    assert!(net.send(file).is_err());
    net.send_bytes(b"still usable").unwrap();
    assert_eq!(server.recv_bytes_timeout(BOUND).unwrap(), b"still usable");
}

/// Sends three messages of growing length.
fn send_three(conn: Connection<()>) {
    for m in [&b"one"[..], &[b'x'; 100][..], b"three"] {
        conn.send_bytes(m).unwrap();
    }
}

#[test]
fn a_message_too_long_for_the_buffer_comes_back_whole_and_the_pipe_goes_on() {
    let (a, b) = Pipe::<()>::duplex().unwrap();
    let p = reaped(Process::new(send_three, b).start().unwrap());
    let mut buf = [0u8; 16];
    assert_eq!(a.recv_bytes_into_slice(&mut buf, 10).unwrap(), 3);
    assert_eq!(&buf[10..13], b"one");
    match a.recv_bytes_into_slice_timeout(&mut buf, 10, BOUND) {
        Err(Error::BufferTooShort { message, room }) => {
            assert_eq!((message.len(), room), (100, 6));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(a.recv_bytes_into_slice(&mut buf, 0).unwrap(), 5);
    assert_eq!(&buf[..5], b"three");
    assert!(matches!(
        a.recv_bytes_into_slice(&mut buf, 17),
        Err(Error::InvalidState(_))
    ));
    p.join_timeout(BOUND).unwrap();
}
