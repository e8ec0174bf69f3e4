//! Hostile and broken peers on real sockets: a frame announcing a payload whose bytes never
//! come, a sender stopped (SIGSTOP) half-way through a large message, a side stream that is
//! `/dev/zero`, lying lengths, frames of the wrong type. No event loop may freeze, no timeout
//! may be broken, no receiver may allocate what the sender never sent.

mod common;

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use common::raw::{self, BATCH, KIND_BYTES, KIND_VALUE};
use common::{bounded, reaped, BOUND};
use procactor::{ActorRef, Connection, Error, Manager, Message, Pipe, Process};

procactor::test_support!();

pub struct Counter {
    n: u64,
}

#[procactor::actor]
impl Counter {
    fn init(_: ()) -> Self {
        Counter { n: 0 }
    }

    pub fn add(&mut self, k: u64) -> u64 {
        self.n += k;
        self.n
    }

    pub fn put(&mut self, data: String) -> usize {
        data.len()
    }
}

struct Stopped(ActorRef<Counter>);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.join_timeout(BOUND);
    }
}

/// The actor answers an ask from another process within `limit`.
fn serves_within(c: &ActorRef<Counter>, limit: Duration) {
    fn ask(c: ActorRef<Counter>) -> bool {
        c.timeout(Duration::from_secs(2)).add(0).is_ok()
    }
    let t = Instant::now();
    let p = reaped(Process::new(ask, c.clone()).start().unwrap());
    assert!(p.join_timeout(BOUND).unwrap(), "the actor did not answer");
    assert!(t.elapsed() < limit, "answered only after {:?}", t.elapsed());
}

#[test]
fn a_large_frame_whose_bytes_never_come_does_not_freeze_an_actor() {
    let c = Stopped(procactor::spawn::<Counter>(()).unwrap());
    let addr = raw::address(&c.0);
    let (m, r) = (CounterMsg::schema(), CounterReply::schema());

    // Before any hello: a large frame whose side stream stalls after a few bytes.
    let early = raw::connect_to(&addr);
    let (stall_a, theirs) = raw::stream_pair();
    raw::send_large_header(early.as_fd(), BATCH, 0, 512 << 20, theirs.as_fd());
    rustix::io::write(&stall_a, &[0u8; 4096]).unwrap();
    drop(theirs);
    serves_within(&c.0, Duration::from_secs(10));

    // After a proper hello: the same, as a caller's batch.
    let caller = raw::connect_as_caller(&addr, m, r);
    let (stall_b, theirs) = raw::stream_pair();
    raw::send_large_header(caller.as_fd(), BATCH, 0, 512 << 20, theirs.as_fd());
    rustix::io::write(&stall_b, &[0u8; 1 << 16]).unwrap();
    drop(theirs);
    serves_within(&c.0, Duration::from_secs(10));
    assert_eq!(c.0.timeout(BOUND).add(1).unwrap(), 1);
    drop((stall_a, stall_b));
}

#[test]
fn a_side_stream_of_dev_zero_makes_no_actor_allocate() {
    let c = Stopped(procactor::spawn::<Counter>(()).unwrap());
    let addr = raw::address(&c.0);
    let caller = raw::connect_as_caller(&addr, CounterMsg::schema(), CounterReply::schema());
    let before = raw::peak_rss_kib(c.0.pid());
    let zero = std::fs::File::open("/dev/zero").unwrap();
    // Announces 1 GiB (within the default limit) that /dev/zero would supply at once.
    raw::send_large_header(caller.as_fd(), BATCH, 0, (1 << 30) - 1, zero.as_fd());
    serves_within(&c.0, Duration::from_secs(10));
    let after = raw::peak_rss_kib(c.0.pid());
    assert!(
        after < before + 64 * 1024,
        "the actor's peak memory grew from {before} to {after} KiB"
    );
    assert_eq!(c.0.timeout(BOUND).add(1).unwrap(), 1);
}

#[test]
fn an_actor_refuses_large_payloads_beyond_its_limit_or_of_the_wrong_size() {
    let c = Stopped(
        procactor::ActorBuilder::<Counter>::new(())
            .max_message_size(1 << 20)
            .spawn()
            .unwrap(),
    );
    let addr = raw::address(&c.0);
    let caller = raw::connect_as_caller(&addr, CounterMsg::schema(), CounterReply::schema());
    // A memory file that is shorter than the length announced, then one over the limit.
    let file = rustix::fs::memfd_create("lie", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&file, 100_000).unwrap();
    raw::send_large_header(caller.as_fd(), BATCH, 0, 900_000, file.as_fd());
    rustix::fs::ftruncate(&file, 4 << 20).unwrap();
    raw::send_large_header(caller.as_fd(), BATCH, 0, 4 << 20, file.as_fd());
    // A frame that is not a batch.
    raw::send_large_header(caller.as_fd(), KIND_VALUE, 0, 100_000, file.as_fd());
    serves_within(&c.0, Duration::from_secs(10));
    // A real caller learns the limit at once, with nothing sent, and goes on.
    let refused = c.0.timeout(BOUND).put("x".repeat(2 << 20));
    assert!(
        matches!(
            refused,
            Err(Error::TooLarge {
                limit: 1_048_576,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(c.0.timeout(BOUND).put("x".repeat(1000)).unwrap(), 1000);
}

/// MiB number `k` of the 512 MiB message: every MiB differs, so a torn or shifted message shows.
fn mib(k: usize) -> Vec<u8> {
    vec![(k % 251) as u8; 1 << 20]
}

fn send_512_mib(conn: Connection<()>) {
    let mut data = Vec::with_capacity(512 << 20);
    for k in 0..512 {
        data.extend_from_slice(&mib(k));
    }
    conn.send_bytes(&data).unwrap();
}

#[test]
fn a_stopped_sender_does_not_break_recv_timeout_and_nothing_is_lost() {
    let (rx, tx) = Pipe::<()>::simplex().unwrap();
    let p = reaped(Process::new(send_512_mib, tx).start().unwrap());
    // The header is there once the child has begun; then it is stopped half-way.
    assert!(rx.poll(BOUND).unwrap());
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(p.pid() as i32, libc::SIGSTOP) };
    let t = Instant::now();
    let got = rx.recv_bytes_timeout(Duration::from_secs(1));
    let took = t.elapsed();
    assert!(got.unwrap_err().is_timeout());
    assert!(
        took < Duration::from_secs(3),
        "the 1 s timeout took {took:?}"
    );
    // What came so far is kept: once the sender goes on, the whole message arrives.
    // SAFETY: as above.
    unsafe { libc::kill(p.pid() as i32, libc::SIGCONT) };
    // With no deadline this time (bounded by the test): the partial read goes on to the end.
    let data = bounded(move || rx.recv_bytes().unwrap());
    assert_eq!(data.len(), 512 << 20);
    for (k, chunk) in data.chunks(1 << 20).enumerate() {
        assert!(chunk == mib(k), "MiB {k} is torn");
    }
    p.join_timeout(BOUND).unwrap();
}

#[test]
fn try_recv_never_loses_a_large_message_that_is_still_arriving() {
    let (a, b) = Pipe::<serde_bytes::ByteBuf>::duplex().unwrap();
    let sender = std::thread::spawn(move || {
        let big = serde_bytes::ByteBuf::from(vec![9u8; 64 << 20]);
        a.send(big).unwrap();
        a.send(serde_bytes::ByteBuf::from(vec![1u8; 3])).unwrap();
    });
    let t = Instant::now();
    let mut got = Vec::new();
    while got.len() < 2 {
        assert!(t.elapsed() < BOUND, "hung");
        match b.try_recv().unwrap() {
            Some(v) => got.push(v),
            None => {
                // poll sees the message in progress as something to read.
                let _ = b.poll(Duration::from_millis(1)).unwrap();
            }
        }
    }
    sender.join().unwrap();
    assert_eq!(got[0].len(), 64 << 20);
    assert!(got[0].iter().all(|&x| x == 9));
    assert_eq!(&got[1][..], &[1, 1, 1]);
}

#[test]
fn a_large_frame_of_the_wrong_type_is_refused_before_it_is_read() {
    let (a, b) = Pipe::<String>::duplex().unwrap();
    let raw_end = a.into_fd();
    let (pump, theirs) = raw::stream_pair();
    // A side stream that delivers zeros as fast as they are read, for 900 MiB.
    let pumper = std::thread::spawn(move || {
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..900 {
            if rustix::io::write(&pump, &zeros).is_err() {
                return;
            }
        }
    });
    let before = raw::peak_rss_kib(std::process::id());
    raw::send_large_header(
        raw_end.as_fd(),
        KIND_VALUE,
        0x1234,
        900 << 20,
        theirs.as_fd(),
    );
    drop(theirs);
    let t = Instant::now();
    assert!(matches!(b.recv_timeout(BOUND), Err(Error::Decode { .. })));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    pumper.join().unwrap();
    let after = raw::peak_rss_kib(std::process::id());
    assert!(
        after < before + 128 * 1024,
        "peak memory grew from {before} to {after} KiB"
    );

    // Raw bytes announced beyond the limit: refused from the header, whatever the type.
    let (a, b) = Pipe::<()>::duplex().unwrap();
    let b = b.with_max_message_size(1 << 20);
    let raw_end = a.into_fd();
    let zero = std::fs::File::open("/dev/zero").unwrap();
    raw::send_large_header(raw_end.as_fd(), KIND_BYTES, 0, 2 << 30, zero.as_fd());
    assert!(matches!(
        b.recv_bytes_timeout(BOUND),
        Err(Error::TooLarge { size, limit: 1_048_576 }) if size == 2 << 30
    ));
    // The end goes on working.
    raw::send_frame(raw_end.as_fd(), KIND_BYTES, 0, b"next", &[]);
    assert_eq!(b.recv_bytes_timeout(BOUND).unwrap(), b"next");
}

#[test]
fn a_stalled_large_frame_does_not_freeze_the_manager() {
    bounded(|| {
        let m = Manager::start().unwrap();
        let l = m.list_from(vec![1u8, 2, 3]).unwrap();
        let addr = raw::address(&l);
        let early = raw::connect_to(&addr);
        let (stall, theirs) = raw::stream_pair();
        raw::send_large_header(early.as_fd(), BATCH, 0, 256 << 20, theirs.as_fd());
        rustix::io::write(&stall, &[7u8; 4096]).unwrap();
        drop(theirs);
        fn len(l: procactor::ListProxy<u8>) -> usize {
            l.len().unwrap()
        }
        let t = Instant::now();
        let p = reaped(Process::new(len, l.clone()).start().unwrap());
        assert_eq!(p.join_timeout(Duration::from_secs(10)).unwrap(), 3);
        assert!(t.elapsed() < Duration::from_secs(10));
        drop(stall);
    });
}

/// A large message begun by a receive that timed out belongs to the end, not to the handle: a
/// clone of the end (a worker thread's) goes on with it, even when the handle that began it is
/// dropped, and receives it before the message after it.
#[test]
fn a_message_begun_by_one_clone_of_an_end_is_finished_by_another() {
    let (a, b) = Pipe::<()>::duplex().unwrap();
    let raw_end = a.into_fd();
    let (side, theirs) = raw::stream_pair();
    let big = vec![5u8; 1 << 20];
    raw::send_large_header(
        raw_end.as_fd(),
        KIND_BYTES,
        0,
        big.len() as u64,
        theirs.as_fd(),
    );
    drop(theirs);
    rustix::io::write(&side, &big[..100_000]).unwrap();
    let b2 = b.try_clone().unwrap();
    assert!(b
        .recv_bytes_timeout(Duration::from_millis(200))
        .unwrap_err()
        .is_timeout());
    raw::send_frame(raw_end.as_fd(), KIND_BYTES, 0, b"next", &[]);
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        std::fs::File::from(side).write_all(&big[100_000..]).is_ok()
    });
    drop(b);
    let first = b2.recv_bytes_timeout(BOUND).unwrap();
    assert!(writer.join().unwrap(), "the sender's bytes were refused");
    assert_eq!(first.len(), 1 << 20);
    assert!(first.iter().all(|&x| x == 5));
    assert_eq!(b2.recv_bytes_timeout(BOUND).unwrap(), b"next");
}

/// A record carrying a TCP socket whose last close lingers (SO_LINGER, a send queue that cannot
/// drain): a receive that refuses the record leaves the socket to the closer thread, and keeps
/// its deadline.
#[test]
fn a_descriptor_whose_close_lingers_does_not_break_recv_timeout() {
    let (a, b) = Pipe::<String>::duplex().unwrap();
    let raw_end = a.into_fd();
    let (c, far, listener) = raw::lingering_tcp(5);
    // A value frame of another type, with the socket attached; we let go of it at once.
    raw::send_frame(raw_end.as_fd(), KIND_VALUE, 0x1234, b"\x00", &[c.as_fd()]);
    drop(c);
    let t = Instant::now();
    let got = b.recv_timeout(Duration::from_secs(1));
    let took = t.elapsed();
    drop((far, listener));
    assert!(got.is_err());
    assert!(
        took < Duration::from_secs(2),
        "a 1 s recv_timeout returned after {took:?}"
    );
}

/// The same socket in one record to the manager (one event loop for every proxy): every other
/// caller is still served.
#[test]
fn a_descriptor_whose_close_lingers_does_not_freeze_the_manager() {
    bounded(|| {
        let m = Manager::start().unwrap();
        let l = m.list_from(vec![1u8, 2, 3]).unwrap();
        let held = raw::freeze(&raw::address(&l), 20);
        std::thread::sleep(Duration::from_millis(200));
        fn len(l: procactor::ListProxy<u8>) -> usize {
            l.len().unwrap()
        }
        let t = Instant::now();
        let p = reaped(Process::new(len, l.clone()).start().unwrap());
        let got = p.join_timeout(Duration::from_secs(5));
        let took = t.elapsed();
        drop(held);
        assert_eq!(got.ok(), Some(3), "a manager call took {took:?}");
    });
}

// ---------------------------------------------------------------------------------------------
// A sparse memory file: it costs its sender nothing, and the actor what it says, once.

/// A process's resident memory (VmRSS), in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// One batch in a sparse 512 MiB memory file (nothing behind it: no page of it exists). The
/// actor reads it into its receive buffer (512 MiB, once: not copied again), finds garbage,
/// and gives the buffer back: its resident memory goes back down. (Before: its peak was twice
/// the size, and it kept the size for good.)
#[test]
fn a_sparse_memory_file_costs_an_actor_its_size_once_and_only_while_read() {
    const N: u64 = 512 << 20;
    let c = Stopped(procactor::spawn::<Counter>(()).unwrap());
    let addr = raw::address(&c.0);
    let caller = raw::connect_as_caller(&addr, CounterMsg::schema(), CounterReply::schema());
    let before = rss_kib(c.0.pid());
    let file = rustix::fs::memfd_create("sparse", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&file, N).unwrap();
    raw::send_large_header(caller.as_fd(), BATCH, 0, N, file.as_fd());
    // Once the actor has read it (its peak shows), and has handled something since.
    let n_kib = N >> 10;
    assert!(common::eventually(BOUND, || raw::peak_rss_kib(c.0.pid()) > before + n_kib / 2));
    assert_eq!(c.0.timeout(BOUND).add(1).unwrap(), 1);
    std::thread::sleep(Duration::from_millis(200));
    let after = rss_kib(c.0.pid());
    let peak = raw::peak_rss_kib(c.0.pid());
    assert!(
        peak < before + n_kib + n_kib / 4,
        "a {n_kib} KiB record raised the actor's peak from {before} to {peak} KiB"
    );
    assert!(
        after < before + 64 * 1024,
        "resident memory {before} KiB before, {after} KiB after (peak {peak} KiB)"
    );
}
