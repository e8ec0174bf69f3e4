//! Hostile and broken peers on real sockets: a frame announcing a payload whose bytes never
//! come, a sender stopped (SIGSTOP) half-way through a large message, a side stream that is
//! `/dev/zero`, lying lengths, frames of the wrong type, an actor that stops reading (SIGSTOP,
//! or busy) with its socket full. No event loop may freeze, no timeout may be broken, no
//! receiver may allocate what the sender never sent, no caller may be held up by another actor.

mod common;

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use common::raw::{self, BATCH, KIND_BYTES, KIND_VALUE};
use common::{bounded, eventually, reaped, BOUND};
use procactor::{
    ActorBuilder, ActorRef, Connection, Error, Mailbox, Manager, Message, Pipe, Process, Value,
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
        a.send().put(i).unwrap();
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
    c.0.send().nap(5_000).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..200_000 {
        c.0.send().add(1).unwrap();
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
        a.send().put_padded(i, pad.clone()).unwrap();
    }
    let_the_flusher_fill_it();
    let r = a.0.clone();
    let got = bounded(move || r.timeout(Duration::from_millis(300)).put(TOLD + 1));
    assert!(got.as_ref().is_err_and(Error::is_timeout), "{got:?}");
    // Exactly the room left: the tells' slots and the ask's are taken.
    let room = CAP - TOLD - 1;
    for i in 0..room {
        if let Err(e) = a.try_send().put(TOLD + 2 + i) {
            panic!("{i} of the {room} slots left could be taken: {e:?}");
        }
    }
    let full = a.try_send().put(0).unwrap_err();
    assert!(matches!(full, Error::MailboxFull { .. }), "{full:?}");
    a.thaw();
    assert!(eventually(BOUND, || seen.get() == TOLD + 2 + room));
    assert_eq!(a.timeout(BOUND).state().unwrap(), (TOLD + 2 + room, 0));
    // Every slot is back: the whole capacity can be taken again, and no more (after a moment for
    // the last slot, as above).
    std::thread::sleep(Duration::from_millis(200));
    a.freeze();
    for _ in 0..CAP {
        a.try_send().put(0).unwrap();
    }
    let full = a.try_send().put(0).unwrap_err();
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
        a.send().put(N + i).unwrap();
        b.send().put(1_000 + i).unwrap();
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
