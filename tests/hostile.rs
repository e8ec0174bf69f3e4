//! Hostile and broken peers on real sockets: a frame announcing a payload whose bytes never
//! come, a sender stopped (SIGSTOP) half-way through a large message, a side stream that is
//! `/dev/zero`, lying lengths, frames of the wrong type, callers slow to read their replies,
//! connections that never say hello, a sparse memory file, an actor that stops reading (SIGSTOP,
//! or busy) with its socket full. No event loop may freeze or spin, no timeout may be broken, no
//! reply may be lost, no receiver may allocate what the sender never sent or keep what it sent
//! for good, no caller may be held up by another actor.

mod common;

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use common::raw::{self, BATCH, KIND_BYTES, KIND_VALUE};
use common::{bounded, eventually, reaped, BOUND};
use procactor::{
    actor::ActorBuilder, actor::Mailbox, ActorRef, Connection, Error, Manager, Message, Pipe,
    Process, Value,
};

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

    /// A reply of `len` bytes (inline up to 64 KiB, in a memory file above).
    pub fn blob(&mut self, len: u32) -> serde_bytes::ByteBuf {
        serde_bytes::ByteBuf::from(vec![7u8; len as usize])
    }

    pub fn nap(&mut self, ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
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
        procactor::actor::ActorBuilder::<Counter>::new(())
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
        match b.try_recv() {
            Ok(v) => got.push(v),
            Err(e) => {
                assert!(matches!(e, Error::Empty), "{e}");
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
        fn len(l: procactor::manager::ListProxy<u8>) -> usize {
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
        fn len(l: procactor::manager::ListProxy<u8>) -> usize {
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

// ---------------------------------------------------------------------------------------------
// Callers slow to read their replies: every reply arrives, in order, and the actor's memory
// stays bounded (back-pressure: it stops reading a connection whose replies pile up).

/// An ask from another process (a connection of its own), bounded by `limit`: whether it was
/// answered, and how long it all took (the process's start included).
fn ask_from_elsewhere(c: &ActorRef<Counter>, limit: Duration) -> (bool, Duration) {
    fn ask((c, limit): (ActorRef<Counter>, Duration)) -> bool {
        c.timeout(limit).add(0).is_ok()
    }
    let t = Instant::now();
    let p = reaped(Process::new(ask, (c.clone(), limit)).start().unwrap());
    let ok = p.join_timeout(BOUND).unwrap();
    (ok, t.elapsed())
}

/// An ask envelope for `blob(len)`, request id `id`.
fn blob_ask(id: u64, len: u32) -> Vec<u8> {
    raw::envelope(
        2,
        id,
        &postcard::to_stdvec(&CounterMsg::Blob { len }).unwrap(),
    )
}

/// The next frame on a raw caller connection must be the reply to `id`: `blob(len)`'s bytes.
fn expect_blob_reply(fd: std::os::fd::BorrowedFd, id: u64, len: usize) {
    let (kind, got_id, payload) = raw::recv_frame(fd, BOUND)
        .unwrap_or_else(|| panic!("no frame where the reply to ask {id} was due"));
    assert_eq!(
        (kind, got_id),
        (raw::REPLY, id),
        "the reply to ask {id} was due"
    );
    match postcard::from_bytes::<CounterReply>(&payload) {
        Ok(CounterReply::Blob(b)) => assert!(b.len() == len && b.iter().all(|&x| x == 7)),
        _ => panic!("the reply to ask {id} is not blob's"),
    }
}

/// Eight threads of one process ask at once for 60 KiB replies, and the process is slow to read
/// for a moment (stopped here; descheduled on a loaded machine does the same): the socket's
/// buffer holds three or four such replies, and the others wait in the actor until there is
/// room. Every thread gets its reply. (Before: the actor dropped the fifth and later ones.)
#[test]
fn a_caller_with_several_threads_that_is_slow_to_read_gets_every_reply() {
    let c = Stopped(procactor::spawn::<Counter>(()).unwrap());
    let connected = procactor::Event::new().unwrap();
    let go = procactor::Event::new().unwrap();
    fn eight_asks(
        (c, connected, go): (ActorRef<Counter>, procactor::Event, procactor::Event),
    ) -> usize {
        c.timeout(BOUND).add(0).unwrap(); // the connection is made
        connected.set();
        go.wait_timeout(BOUND).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    c.timeout(Duration::from_secs(10))
                        .blob(60_000)
                        .is_ok_and(|b| b.len() == 60_000)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|ok| !ok)
            .count()
    }
    let p = reaped(
        Process::new(eight_asks, (c.0.clone(), connected.clone(), go.clone()))
            .start()
            .unwrap(),
    );
    connected.wait_timeout(BOUND).unwrap();
    c.0.cast().nap(1_500).unwrap(); // busy: the asks queue behind this
    std::thread::sleep(Duration::from_millis(200));
    go.set();
    std::thread::sleep(Duration::from_millis(500)); // the asks are written by now
                                                    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(p.pid() as i32, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(2_000)); // the nap ends, the replies go
                                                      // SAFETY: as above.
    unsafe { libc::kill(p.pid() as i32, libc::SIGCONT) };
    let lost = p.join_timeout(BOUND).unwrap();
    assert_eq!(lost, 0, "{lost} of 8 asks never got their reply");
}

/// A raw caller writes 2,000 asks for 60 KiB replies (120 MB in all) and does not read. The
/// actor keeps what its buffer cannot take, stops reading that connection past its high-water
/// mark (so the writer blocks: back-pressure), stays small, and serves others meanwhile; once
/// the caller reads, every reply comes, in the order asked.
#[test]
fn replies_queued_under_back_pressure_keep_their_order_and_bound_the_actors_memory() {
    const ASKS: u64 = 2_000;
    let c = Stopped(procactor::spawn::<Counter>(()).unwrap());
    let addr = raw::address(&c.0);
    let caller = raw::connect_as_caller(&addr, CounterMsg::schema(), CounterReply::schema());
    let before = rss_kib(c.0.pid());
    let writer_end = caller.try_clone().unwrap();
    // Bounded: should the actor never read again, the writer's send fails instead of hanging.
    rustix::net::sockopt::set_socket_timeout(
        &writer_end,
        rustix::net::sockopt::Timeout::Send,
        Some(BOUND),
    )
    .unwrap();
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let written = written.clone();
        std::thread::spawn(move || {
            for id in 1..=ASKS {
                // One ask per record: the actor may stop reading between any two.
                let batch = blob_ask(id, 60_000);
                let mut head = vec![BATCH];
                head.extend_from_slice(&0u64.to_le_bytes());
                head.extend_from_slice(&batch);
                if rustix::net::send(&writer_end, &head, rustix::net::SendFlags::NOSIGNAL).is_err()
                {
                    return;
                }
                written.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    // While the caller does not read: the actor serves another caller, and stops reading this
    // one (its writer cannot get everything out), so its memory stays far below 120 MB.
    std::thread::sleep(Duration::from_millis(1_000));
    let (ok, took) = ask_from_elsewhere(&c.0, Duration::from_secs(5));
    assert!(ok, "another caller was not served ({took:?})");
    let held = written.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        held < ASKS,
        "the actor read all {ASKS} asks of a caller that reads none of its replies"
    );
    let grown = rss_kib(c.0.pid()).saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "the actor grew by {grown} KiB with a caller that does not read"
    );
    for id in 1..=ASKS {
        expect_blob_reply(caller.as_fd(), id, 60_000);
    }
    writer.join().unwrap();
    assert_eq!(written.load(std::sync::atomic::Ordering::SeqCst), ASKS);
    assert_eq!(c.0.timeout(BOUND).add(1).unwrap(), 1);
}

/// A stop arrives behind six asks for 60 KiB replies on a connection whose buffer holds only
/// three or four of them: the actor ends with replies still waiting, and sends them, then its
/// last words, in that order, as the caller reads (it starts a little late). (Before: the
/// replies that did not fit and the EXIT were dropped.)
#[test]
fn the_last_words_reach_a_caller_whose_buffer_is_full() {
    let c = Stopped(procactor::spawn::<Counter>(()).unwrap());
    let addr = raw::address(&c.0);
    let caller = raw::connect_as_caller(&addr, CounterMsg::schema(), CounterReply::schema());
    let mut batch = Vec::new();
    for id in 1..=6 {
        batch.extend(blob_ask(id, 60_000));
    }
    batch.extend(raw::envelope(3, 0, &[0])); // Sys::Stop
    raw::send_frame(caller.as_fd(), BATCH, 0, &batch, &[]);
    std::thread::sleep(Duration::from_millis(20));
    for id in 1..=6 {
        expect_blob_reply(caller.as_fd(), id, 60_000);
    }
    let (kind, _, _) = raw::recv_frame(caller.as_fd(), BOUND).expect("the actor's last words");
    assert_eq!(kind, raw::EXIT);
    assert_eq!(
        c.0.join_timeout(BOUND).unwrap(),
        procactor::ExitReason::Normal
    );
}

// ---------------------------------------------------------------------------------------------
// Connections that never say hello, and floods of connections.

/// CPU time a process used (user + system), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    after_name
        .split(' ')
        .skip(11)
        .take(2)
        .map(|x| x.parse::<u64>().unwrap())
        .sum()
}

/// Descriptors a process has open.
fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// 300 connections that never say hello, to an actor whose descriptor limit is 256 (lowered
/// here to keep the test light; 20,000 connections do the same at the default limit). The
/// actor gives up the oldest silent ones to accept new callers, and, idle, uses no CPU: it
/// does not spin on a listener it cannot accept from. (Before: no new caller got in, and the
/// actor spun, logging on every pass.)
#[test]
fn connections_without_hello_neither_lock_out_callers_nor_make_an_actor_spin() {
    let c = Stopped(procactor::spawn::<Counter>(()).unwrap());
    let pid = rustix::process::Pid::from_raw(c.0.pid() as i32).unwrap();
    rustix::process::prlimit(
        Some(pid),
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(256),
            maximum: Some(256),
        },
    )
    .unwrap();
    let addr = raw::address(&c.0);
    let held: Vec<std::os::fd::OwnedFd> = (0..300).map(|_| raw::connect_to(&addr)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(c.0.pid());
    std::thread::sleep(Duration::from_secs(1));
    let busy = cpu_ticks(c.0.pid()) - before;
    let (ok, took) = ask_from_elsewhere(&c.0, Duration::from_secs(3));
    assert!(
        ok,
        "a new caller was not served (its 3 s ask failed after {took:?})"
    );
    assert!(busy < 10, "the idle actor used {busy} ticks of CPU in 1 s");
    // Still idle after the new caller came and went.
    let before = cpu_ticks(c.0.pid());
    std::thread::sleep(Duration::from_secs(1));
    let busy = cpu_ticks(c.0.pid()) - before;
    assert!(busy < 10, "the idle actor used {busy} ticks of CPU in 1 s");
    drop(held);
    assert_eq!(c.0.timeout(BOUND).add(1).unwrap(), 1);
}

/// 80 callers say hello to an actor whose descriptor limit is 64: it welcomes those it has
/// room for, and the others wait in its backlog. With nothing it may give up (every connection
/// said hello), the actor rests its listener instead of spinning on it, and takes the waiting
/// callers as the first ones leave. (Before: it spun, logging on every pass.)
#[test]
fn an_actor_out_of_descriptors_for_its_callers_rests_and_takes_new_ones_as_old_ones_leave() {
    let c = Stopped(procactor::spawn::<Counter>(()).unwrap());
    let pid = rustix::process::Pid::from_raw(c.0.pid() as i32).unwrap();
    rustix::process::prlimit(
        Some(pid),
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(64),
            maximum: Some(64),
        },
    )
    .unwrap();
    let addr = raw::address(&c.0);
    let hello = raw::caller_hello(CounterMsg::schema(), CounterReply::schema());
    let callers: Vec<std::os::fd::OwnedFd> = (0..80)
        .map(|_| {
            let fd = raw::connect_to(&addr);
            raw::send_frame(fd.as_fd(), raw::HELLO, 0, &hello, &[]);
            fd
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let welcomed = |fd: &std::os::fd::OwnedFd, wait: Duration| {
        matches!(
            raw::recv_frame(fd.as_fd(), wait),
            Some((raw::WELCOME, _, _))
        )
    };
    let (first, waiting): (Vec<_>, Vec<_>) = callers
        .into_iter()
        .partition(|fd| welcomed(fd, Duration::from_millis(50)));
    assert!(
        !first.is_empty() && !waiting.is_empty(),
        "{} welcomed, {} waiting",
        first.len(),
        waiting.len()
    );
    let before = cpu_ticks(c.0.pid());
    std::thread::sleep(Duration::from_secs(1));
    let busy = cpu_ticks(c.0.pid()) - before;
    assert!(busy < 10, "the idle actor used {busy} ticks of CPU in 1 s");
    // The first callers leave: every waiting one is welcomed.
    drop(first);
    for (k, fd) in waiting.iter().enumerate() {
        assert!(welcomed(fd, BOUND), "waiting caller {k} never welcomed");
    }
    drop(waiting);
    assert_eq!(c.0.timeout(BOUND).add(1).unwrap(), 1);
}

/// Connections that never say hello: the actor keeps at most 256 of them (the oldest go
/// first), and drops each 10 s after it came. Its callers are served throughout.
#[test]
fn an_actor_keeps_few_connections_without_hello_and_not_for_long() {
    let c = Stopped(procactor::spawn::<Counter>(()).unwrap());
    assert_eq!(c.0.timeout(BOUND).add(1).unwrap(), 1);
    let base = fds_of(c.0.pid());
    let addr = raw::address(&c.0);
    let t = Instant::now();
    let silent: Vec<std::os::fd::OwnedFd> = (0..400).map(|_| raw::connect_to(&addr)).collect();
    assert_eq!(c.0.timeout(BOUND).add(1).unwrap(), 2);
    let hung_up = |fd: &std::os::fd::OwnedFd| peer_hung_up(fd);
    // The 144 oldest were dropped to keep 256, and no more.
    assert!(
        common::eventually(BOUND, || silent[..144].iter().all(hung_up)),
        "the oldest silent connections were kept"
    );
    assert!(silent[144..].iter().all(|fd| !hung_up(fd)));
    // The dropped ones are shut at once (so their peers see the hang-up above), and closed by
    // the actor's closer thread a moment later (well before the others' 10 s are up).
    let mut kept = 0;
    let settled = common::eventually(Duration::from_secs(2), || {
        kept = fds_of(c.0.pid()).saturating_sub(base);
        kept <= 256
    });
    assert!(settled, "the actor holds {kept} more descriptors");
    // The rest go once their 10 s are up, not before.
    let gone = common::eventually(BOUND, || silent.iter().all(hung_up));
    let after = t.elapsed();
    assert!(gone, "silent connections kept past {after:?}");
    assert!(
        after >= Duration::from_secs(9),
        "silent connections dropped after only {after:?}"
    );
    assert_eq!(c.0.timeout(BOUND).add(1).unwrap(), 3);
    // Closed by the actor's closer thread, which may run a moment after the hang-ups were seen
    // (under CPU contention, a scheduling quantum or two later).
    let mut held = 0;
    let back = common::eventually(Duration::from_secs(2), || {
        held = fds_of(c.0.pid());
        held <= base
    });
    assert!(
        back,
        "the actor holds {held} descriptors, {base} before the silent connections"
    );
}

/// Whether the peer of a connected socket hung up (a zero-time poll for RDHUP).
fn peer_hung_up(fd: &std::os::fd::OwnedFd) -> bool {
    let mut pfd = [rustix::event::PollFd::new(
        fd,
        rustix::event::PollFlags::RDHUP,
    )];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let _ = rustix::event::poll(&mut pfd, Some(&zero));
    !pfd[0].revents().is_empty()
}

/// Two threads connect and hang up as fast as they can, for 3 s: a new caller still gets its
/// welcome and its reply promptly (the actor accepts a bounded number of connections per turn
/// of its loop, then serves the others).
#[test]
fn a_flood_of_connections_does_not_starve_new_callers() {
    let c = Stopped(procactor::spawn::<Counter>(()).unwrap());
    let addr = raw::address(&c.0);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooders: Vec<_> = (0..2)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let a = rustix::net::SocketAddrUnix::new_abstract_name(addr.as_bytes()).unwrap();
                let until = Instant::now() + Duration::from_secs(3);
                while Instant::now() < until && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let fd = rustix::net::socket_with(
                        rustix::net::AddressFamily::UNIX,
                        rustix::net::SocketType::SEQPACKET,
                        rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC,
                        None,
                    )
                    .unwrap();
                    let _ = rustix::net::connect(&fd, &a);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut slowest = Duration::ZERO;
    for k in 0..20 {
        let t = Instant::now();
        let caller = raw::connect_as_caller(&addr, CounterMsg::schema(), CounterReply::schema());
        let ask = raw::envelope(
            2,
            k + 1,
            &postcard::to_stdvec(&CounterMsg::Add { k: 0 }).unwrap(),
        );
        raw::send_frame(caller.as_fd(), BATCH, 0, &ask, &[]);
        let reply = raw::recv_frame(caller.as_fd(), BOUND);
        assert!(matches!(reply, Some((raw::REPLY, id, _)) if id == k + 1));
        slowest = slowest.max(t.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    assert!(
        slowest < Duration::from_secs(2),
        "a new caller waited {slowest:?} while connections flooded the actor"
    );
}

// ---------------------------------------------------------------------------------------------
// An actor that stops reading: its socket fills up, and its callers' deadlines still hold.

/// Checks that the numbers it is told come in order, and shows how far it got in shared memory:
/// readable while its callers' connections are stuck, and without an ask (which would write
/// the tells queued before it itself).
pub struct InOrder {
    next: u64,
    out_of_order: u64,
    seen: Value<u64>,
}

#[procactor::actor]
impl InOrder {
    fn init(seen: Value<u64>) -> Self {
        InOrder {
            next: 0,
            out_of_order: 0,
            seen,
        }
    }

    pub fn put(&mut self, i: u64) {
        if i != self.next {
            self.out_of_order += 1;
        }
        self.next = i + 1;
        self.seen.set(self.next);
    }

    /// [`put`](InOrder::put) with some bytes, to fill a socket with fewer messages.
    pub fn put_padded(&mut self, i: u64, _pad: String) {
        self.put(i)
    }

    /// A message of some bytes that leaves the count alone (sent by several threads at once).
    pub fn pad(&mut self, _pad: String) {}

    /// The next number it expects, and how many came out of order.
    pub fn state(&self) -> (u64, u64) {
        (self.next, self.out_of_order)
    }

    pub fn nap(&mut self, ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }

    /// A reply of `len` bytes.
    pub fn blob(&mut self, len: u32) -> serde_bytes::ByteBuf {
        serde_bytes::ByteBuf::from(vec![7u8; len as usize])
    }
}

/// An actor that can be stopped with SIGSTOP; when dropped (on the failure path too), it is
/// resumed, killed and reaped.
struct Frozen<A>(ActorRef<A>);

impl<A> Frozen<A> {
    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own actor child, which is reaped only when this is dropped.
        unsafe { libc::kill(self.0.pid() as i32, sig) };
    }

    fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }
}

impl<A> std::ops::Deref for Frozen<A> {
    type Target = ActorRef<A>;
    fn deref(&self) -> &ActorRef<A> {
        &self.0
    }
}

impl<A> Drop for Frozen<A> {
    fn drop(&mut self) {
        self.thaw();
        let _ = self.0.kill();
        let _ = self.0.join_timeout(BOUND);
    }
}

fn in_order() -> (Frozen<InOrder>, Value<u64>) {
    let seen = Value::new(0u64).unwrap();
    let a = Frozen(procactor::spawn::<InOrder>(seen.clone()).unwrap());
    (a, seen)
}

/// Tells the actor `from..to` (in order). Enough of them fill its socket if it does not read:
/// the rest waits in this process's outbox.
fn put_range(a: &ActorRef<InOrder>, from: u64, to: u64) {
    for i in from..to {
        a.cast().put(i).unwrap();
    }
}

/// The flusher has written what the actor's socket takes (and met the full socket).
fn let_the_flusher_fill_it() {
    std::thread::sleep(Duration::from_millis(300));
}

/// A bounded ask (`timeout(d)`) is at most `d` in all, even when the actor's socket is full and
/// the flusher thread is writing to it: the reviewer's repro (an actor busy for 5 s; a 500 ms
/// ask returned after the 5 s).
#[test]
fn ask_timeout_is_kept_when_a_busy_actors_socket_is_full() {
    let c = Stopped(procactor::spawn::<Counter>(()).unwrap());
    c.0.cast().nap(5_000).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..200_000 {
        c.0.cast().add(1).unwrap();
    }
    let_the_flusher_fill_it();
    let r = c.0.clone();
    let t = Instant::now();
    let got = bounded(move || r.timeout(Duration::from_millis(500)).add(0));
    let took = t.elapsed();
    assert!(got.as_ref().is_err_and(Error::is_timeout), "{got:?}");
    assert!(
        took < Duration::from_secs(2),
        "a 500 ms ask returned after {took:?}"
    );
}

/// Against a stopped actor whose socket is full, a bounded ask times out on time whether it
/// waits for room in the socket or for the writing turn (held here by an unbounded ask of
/// another thread, blocked on that socket). What it leaves is consistent: its message stays in
/// place, in order with the tells before and after it, and is handled once the actor goes on;
/// its late reply reaches nobody (the next ask gets its own); nothing is lost or doubled.
#[test]
fn an_ask_that_times_out_on_a_stopped_actor_leaves_the_connection_consistent() {
    const N: u64 = 100_000;
    let (a, seen) = in_order();
    a.put(0).unwrap();
    a.freeze();
    put_range(&a, 1, N);
    let_the_flusher_fill_it();
    // Waits for room, with the writing turn.
    let r = a.0.clone();
    let t = Instant::now();
    let got = bounded(move || r.timeout(Duration::from_millis(300)).put(N));
    assert!(got.as_ref().is_err_and(Error::is_timeout), "{got:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    put_range(&a, N + 1, N + 1_000);
    // An unbounded ask takes the turn and blocks on the full socket...
    let r = a.0.clone();
    let unbounded = std::thread::spawn(move || r.state());
    std::thread::sleep(Duration::from_millis(200));
    // ... and a bounded one, waiting for the turn, still keeps its deadline.
    let r = a.0.clone();
    let t = Instant::now();
    let got = bounded(move || r.timeout(Duration::from_millis(300)).put(N + 1_000));
    assert!(got.as_ref().is_err_and(Error::is_timeout), "{got:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    put_range(&a, N + 1_001, N + 2_000);
    a.thaw();
    let blocked = bounded(move || unbounded.join().unwrap());
    assert_eq!(blocked.unwrap().1, 0);
    // What the unbounded ask left queued (the tells told while it held the turn) is handed back
    // to the flusher: it comes without any other ask to write it.
    assert!(
        eventually(BOUND, || seen.get() == N + 2_000),
        "{} of {}",
        seen.get(),
        N + 2_000
    );
    // Every message, the two timed-out asks' included, handled once and in order.
    assert_eq!(a.timeout(BOUND).state().unwrap(), (N + 2_000, 0));
    // The late replies went nowhere: each ask gets its own.
    a.timeout(BOUND).put(N + 2_000).unwrap();
    assert_eq!(a.timeout(BOUND).state().unwrap(), (N + 2_001, 0));
}

/// A bounded ask that times out before its message was written keeps a bounded mailbox's
/// count exact: its slot is taken (the message is still delivered later) and given back when
/// the actor handles it, as for any message.
#[test]
fn an_ask_that_times_out_on_a_full_socket_keeps_the_mailbox_count_exact() {
    const CAP: u64 = 20_000;
    const TOLD: u64 = 15_000;
    let seen = Value::new(0u64).unwrap();
    let a = Frozen(
        ActorBuilder::<InOrder>::new(seen.clone())
            .mailbox(Mailbox::bounded(CAP as u32))
            .spawn()
            .unwrap(),
    );
    a.put(0).unwrap();
    // The actor gives a slot back just after it answered: a moment for it, before it stops.
    std::thread::sleep(Duration::from_millis(200));
    a.freeze();
    // About 1.5 MB: far more than the socket holds.
    let pad = "x".repeat(100);
    for i in 1..=TOLD {
        a.cast().put_padded(i, pad.clone()).unwrap();
    }
    let_the_flusher_fill_it();
    let r = a.0.clone();
    let got = bounded(move || r.timeout(Duration::from_millis(300)).put(TOLD + 1));
    assert!(got.as_ref().is_err_and(Error::is_timeout), "{got:?}");
    // Exactly the room left: the tells' slots and the ask's are taken.
    let room = CAP - TOLD - 1;
    for i in 0..room {
        if let Err(e) = a.try_cast().put(TOLD + 2 + i) {
            panic!("{i} of the {room} slots left could be taken: {e:?}");
        }
    }
    let full = a.try_cast().put(0).unwrap_err();
    assert!(matches!(full, Error::MailboxFull { .. }), "{full:?}");
    a.thaw();
    assert!(eventually(BOUND, || seen.get() == TOLD + 2 + room));
    assert_eq!(a.timeout(BOUND).state().unwrap(), (TOLD + 2 + room, 0));
    // Every slot is back: the whole capacity can be taken again, and no more (after a moment for
    // the last slot, as above).
    std::thread::sleep(Duration::from_millis(200));
    a.freeze();
    for _ in 0..CAP {
        a.try_cast().put(0).unwrap();
    }
    let full = a.try_cast().put(0).unwrap_err();
    assert!(matches!(full, Error::MailboxFull { .. }), "{full:?}");
    a.thaw();
}

/// One flusher thread writes every connection of a process: an actor that stops reading (its
/// socket full) must not hold up the tells to another actor. After it goes on, nothing is lost
/// and each actor's messages came in order.
#[test]
fn a_stopped_actor_does_not_hold_up_tells_to_another() {
    const N: u64 = 200_000;
    let (a, seen_a) = in_order();
    let (b, seen_b) = in_order();
    a.put(0).unwrap();
    b.put(0).unwrap();
    a.freeze();
    put_range(&a, 1, N);
    let_the_flusher_fill_it();
    // Tells only (an ask would write the tells before it itself): the flusher must deliver them.
    let t = Instant::now();
    put_range(&b, 1, 1_000);
    assert!(
        eventually(Duration::from_secs(3), || seen_b.get() == 1_000),
        "tells to b stalled behind a: {} of 1000 after {:?}",
        seen_b.get(),
        t.elapsed()
    );
    // Again, interleaved with more tells to the stopped one.
    for i in 0..1_000 {
        a.cast().put(N + i).unwrap();
        b.cast().put(1_000 + i).unwrap();
    }
    assert!(
        eventually(Duration::from_secs(3), || seen_b.get() == 2_000),
        "tells to b stalled behind a: {} of 2000",
        seen_b.get()
    );
    assert!(
        seen_a.get() < N,
        "a was stopped: it cannot have read them all"
    );
    a.thaw();
    // The flusher writes the rest once a reads again.
    assert!(
        eventually(BOUND, || seen_a.get() == N + 1_000),
        "a got {} of {}",
        seen_a.get(),
        N + 1_000
    );
    assert_eq!(a.timeout(BOUND).state().unwrap(), (N + 1_000, 0));
    assert_eq!(b.timeout(BOUND).state().unwrap(), (2_000, 0));
}

/// Tells queued while a caller has the writing turn and is blocked on the full socket of a
/// stopped actor: the flusher leaves the connection with that caller, which hands it back when it
/// lets go, so they are written without any later ask to carry them.
#[test]
fn tells_queued_while_an_ask_is_blocked_writing_are_written_after_it() {
    let (a, seen) = in_order();
    a.put(0).unwrap();
    a.freeze();
    // Asks of about 60 KB from several threads: a few records fill the socket, and the next ask
    // blocks in its write with the writing turn (the others wait for the turn).
    let pad = "x".repeat(60_000);
    let askers: Vec<_> = (0..8)
        .map(|_| {
            let (r, pad) = (a.0.clone(), pad.clone());
            std::thread::spawn(move || r.pad(pad).is_ok())
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // The flusher finds the turn taken for these.
    put_range(&a, 1, 1_000);
    std::thread::sleep(Duration::from_millis(300));
    a.thaw();
    for t in askers {
        assert!(bounded(move || t.join().unwrap()));
    }
    assert!(
        eventually(BOUND, || seen.get() == 1_000),
        "{} of 1000 tells arrived",
        seen.get()
    );
    assert_eq!(a.timeout(BOUND).state().unwrap(), (1_000, 0));
}

/// Replies to asks that gave up are read only when something reads, and an actor stops reading
/// a connection whose replies pile up unread (its back-pressure: it drops none). A process that
/// then only tells still gets its tells through: the flusher, waiting for room, reads (and
/// drops) those replies, and the actor reads again.
#[test]
fn tells_get_through_when_replies_to_asks_that_gave_up_pile_up() {
    const N: u64 = 200_000;
    let (a, seen) = in_order();
    a.cast().nap(1_000).unwrap();
    // About 2.5 MiB of replies nobody waits for: more than the socket holds, and than the actor
    // keeps for one connection before it stops reading it.
    for _ in 0..40 {
        let got = a.timeout(Duration::from_millis(5)).blob(60 * 1024);
        assert!(got.as_ref().is_err_and(Error::is_timeout), "{got:?}");
    }
    // About 2.4 MB of tells, behind them.
    put_range(&a, 0, N);
    assert!(
        eventually(BOUND, || seen.get() == N),
        "{} of {N} tells handled",
        seen.get()
    );
    assert_eq!(a.timeout(BOUND).state().unwrap(), (N, 0));
}
