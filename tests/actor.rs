//! Actors in real processes: asks and tells, panics, kills, dead callers, garbage on the wire,
//! bounded mailboxes, monitors, links, the registry, and many actors at once.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, pid_alive, reaped, BOUND};
use procactor::{
    actor::ActorBuilder, actor::Down, actor::Mailbox, ActorRef, Connection, Context, Error,
    ExitReason, Message, Pipe, Process,
};

procactor::test_support!();

/// Stops (or kills) an actor when dropped, and waits for it: nothing left behind on failure.
struct Stopped<A>(ActorRef<A>);

impl<A> std::ops::Deref for Stopped<A> {
    type Target = ActorRef<A>;
    fn deref(&self) -> &ActorRef<A> {
        &self.0
    }
}

impl<A> Drop for Stopped<A> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.join_timeout(BOUND);
    }
}

/// A value that refuses to be serialized when it holds `true`.
#[derive(serde::Deserialize)]
pub struct Fussy(bool);

/// A value that travels, but that the receiving side refuses to decode.
#[derive(serde::Serialize)]
pub struct Picky(u64);

impl<'de> serde::Deserialize<'de> for Picky {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let _ = u64::deserialize(d)?;
        Err(serde::de::Error::custom("Picky refuses"))
    }
}

impl serde::Serialize for Fussy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 {
            return Err(serde::ser::Error::custom("Fussy refuses"));
        }
        s.serialize_newtype_struct("Fussy", &self.0)
    }
}

pub struct Counter {
    total: u64,
    report: Option<Connection<u64>>,
}

#[procactor::actor]
impl Counter {
    fn init(report: Option<Connection<u64>>) -> Self {
        Counter { total: 0, report }
    }

    pub fn add(&mut self, n: u64) -> u64 {
        self.total += n;
        self.total
    }

    pub fn get(&self) -> u64 {
        self.total
    }

    pub fn echo(&self, v: String) -> String {
        v
    }

    pub fn nap(&self, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }

    /// `n` bytes, after `ms` milliseconds.
    pub fn big(&self, n: usize, ms: u64) -> serde_bytes::ByteBuf {
        std::thread::sleep(Duration::from_millis(ms));
        serde_bytes::ByteBuf::from(vec![7u8; n])
    }

    pub fn sum(&mut self, data: serde_bytes::ByteBuf) -> u64 {
        let s: u64 = data.iter().map(|b| u64::from(*b)).sum();
        self.total += s;
        s
    }

    pub fn fussy(&mut self, f: Fussy) -> bool {
        f.0
    }

    /// Never runs: its argument does not decode.
    pub fn add_picky(&mut self, n: Picky) -> u64 {
        self.total += n.0;
        self.total
    }

    /// Tries a tell to itself: `Some(true)` if it went, `None` if the try timed out (not
    /// connected yet), and how long the try took (ms).
    pub fn self_try(&mut self, ctx: &mut Context<Self>) -> (Option<bool>, u64) {
        let t = Instant::now();
        let r = ctx.myself().try_cast().add(1);
        let ms = t.elapsed().as_millis() as u64;
        match r {
            Ok(()) => (Some(true), ms),
            Err(e) if e.is_timeout() => (None, ms),
            Err(_) => (Some(false), ms),
        }
    }

    /// Adds, then answers with a reply that cannot be encoded.
    pub fn add_unanswered(&mut self, n: u64) -> Fussy {
        self.total += n;
        Fussy(true)
    }

    pub fn explode(&mut self, why: String) -> u64 {
        panic!("{why}")
    }

    pub fn quit(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }

    fn stopping(&mut self) {
        if let Some(r) = &self.report {
            let _ = r.send(self.total);
        }
    }
}

fn counter() -> Stopped<Counter> {
    Stopped(procactor::spawn::<Counter>(None).expect("spawn counter"))
}

#[test]
fn ask_tell_and_a_normal_stop() {
    let c = counter();
    assert_ne!(c.pid(), std::process::id());
    assert_eq!(c.add(2).unwrap(), 2);
    for _ in 0..10_000 {
        c.cast().add(1).unwrap();
    }
    assert_eq!(c.get().unwrap(), 10_002, "tells arrive before a later ask");
    assert_eq!(c.timeout(BOUND).echo("hi".into()).unwrap(), "hi");
    c.stop().unwrap();
    assert_eq!(c.join_timeout(BOUND).unwrap(), ExitReason::Normal);
    assert!(!pid_alive(c.pid()));
    // After the end: a clear error, no hang.
    assert!(matches!(c.get(), Err(Error::ActorDied { .. })));
    c.stop().unwrap(); // stopping a stopped actor is fine
}

#[test]
fn stop_drains_what_was_sent_before() {
    let (here, there) = Pipe::<u64>::duplex().unwrap();
    let c = Stopped(procactor::spawn::<Counter>(Some(there)).unwrap());
    for _ in 0..5_000 {
        c.cast().add(1).unwrap();
    }
    c.stop().unwrap();
    assert_eq!(here.recv_timeout(BOUND).unwrap(), 5_000);
    assert_eq!(c.join_timeout(BOUND).unwrap(), ExitReason::Normal);
}

#[test]
fn a_handler_panic_is_the_callers_error_not_a_hang() {
    let c = counter();
    c.add(1).unwrap();
    let err = c.explode("kaboom".into()).unwrap_err();
    match &err {
        Error::ActorDied { reason, pid, .. } => match &**reason {
            ExitReason::Panicked { message, location } => {
                assert_eq!(message, "kaboom");
                assert!(location.as_deref().unwrap_or("").contains("actor.rs"));
                assert_eq!(*pid, c.pid());
            }
            other => panic!("unexpected reason: {other:?}"),
        },
        other => panic!("unexpected: {other:?}"),
    }
    assert!(matches!(
        c.join_timeout(BOUND).unwrap(),
        ExitReason::Panicked { .. }
    ));
}

#[test]
fn ctx_stop_ends_the_actor_normally() {
    let c = counter();
    c.quit().unwrap();
    assert_eq!(c.join_timeout(BOUND).unwrap(), ExitReason::Normal);
}

#[test]
fn kill_is_seen_by_callers_and_monitors() {
    let c = counter();
    let m = c.monitor().unwrap();
    let pid = c.pid();
    c.kill().unwrap();
    let down = m.wait_timeout(BOUND).unwrap();
    assert_eq!(down.reason, ExitReason::Killed { signal: 9 });
    assert_eq!(down.id, c.id());
    match c.get() {
        Err(Error::ActorDied { reason, .. }) => {
            assert_eq!(*reason, ExitReason::Killed { signal: 9 })
        }
        other => panic!("unexpected: {other:?}"),
    }
    assert!(!pid_alive(pid));
}

#[test]
fn ask_timeout_is_honoured_and_the_late_reply_goes_nowhere() {
    let c = counter();
    let t = Instant::now();
    let err = c.timeout(Duration::from_millis(100)).nap(600).unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(t.elapsed() < Duration::from_millis(500));
    // The next ask gets its own reply, not the late one.
    assert_eq!(c.timeout(BOUND).echo("mine".into()).unwrap(), "mine");
}

/// Asks that time out while the actor is busy (their 60 KiB replies come later, and nothing
/// reads them until this process asks again), then a burst of tells, then an ask.
fn timed_out_asks_then_tells(c: ActorRef<Counter>) -> (usize, u64) {
    c.timeout(BOUND).add(0).unwrap(); // connected
    c.cast().nap(2_000).unwrap(); // busy: the asks below time out
    let timed_out = (0..100)
        .filter(|_| c.timeout(Duration::from_millis(1)).big(60_000, 0).is_err())
        .count();
    for _ in 0..200_000 {
        c.cast().add(1).unwrap();
    }
    (timed_out, c.timeout(Duration::from_secs(10)).get().unwrap())
}

/// The actor keeps replies a caller does not read yet (it never drops one) and, past a bound,
/// stops reading that caller until it takes them. Here the caller's unread replies are those
/// of asks that timed out, and it goes on writing tells: it reads what the actor sends while
/// its socket is full, so neither waits on the other. (Without that, the caller hung for good.)
#[test]
fn a_caller_that_left_late_replies_unread_goes_on_telling_and_asking() {
    let c = counter();
    let p = reaped(
        Process::new(timed_out_asks_then_tells, c.0.clone())
            .start()
            .unwrap(),
    );
    let got = p.join_timeout(Duration::from_secs(20));
    assert_eq!(got.ok(), Some((100, 200_000)));
}

fn asker((c, tag): (ActorRef<Counter>, u32)) -> u32 {
    let mut ok = 0;
    for i in 0..200 {
        let v = format!("{tag}-{i}");
        assert_eq!(c.echo(v.clone()).unwrap(), v);
        c.add(1).unwrap();
        ok += 1;
    }
    ok
}

#[test]
fn refs_travel_and_every_reply_reaches_its_own_caller() {
    let c = counter();
    let procs: Vec<_> = (0..6)
        .map(|tag| reaped(Process::new(asker, (c.0.clone(), tag)).start().unwrap()))
        .collect();
    // Threads of this process at the same time, on one shared connection.
    let threads: Vec<_> = (100..104)
        .map(|tag| {
            let c = c.0.clone();
            std::thread::spawn(move || asker((c, tag)))
        })
        .collect();
    for p in &procs {
        assert_eq!(p.join_timeout(BOUND).unwrap(), 200);
    }
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert_eq!(c.get().unwrap(), 10 * 200);
}

#[test]
fn large_messages_and_replies_both_ways() {
    let c = counter();
    let mib = 1 << 20;
    assert_eq!(c.big(3 * mib, 0).unwrap().len(), 3 * mib);
    let data = serde_bytes::ByteBuf::from(vec![1u8; 2 * mib]);
    assert_eq!(c.sum(data.clone()).unwrap(), 2 * mib as u64);
    c.cast().sum(data).unwrap();
    assert_eq!(c.get().unwrap(), 4 * mib as u64);
    // A caller that gives up on a large reply never blocks the actor: the reply is detached.
    assert!(c
        .timeout(Duration::from_millis(50))
        .big(8 * mib, 200)
        .unwrap_err()
        .is_timeout());
    assert_eq!(c.timeout(BOUND).echo("after".into()).unwrap(), "after");
    assert_eq!(c.timeout(BOUND).add(0).unwrap(), 4 * mib as u64);
}

fn tell_and_return(c: ActorRef<Counter>) {
    for _ in 0..1_000 {
        c.cast().add(1).unwrap();
    }
}

#[test]
fn tells_are_handled_before_a_child_reports_it_returned() {
    let c = counter();
    for round in 1..=20u64 {
        let p = reaped(Process::new(tell_and_return, c.0.clone()).start().unwrap());
        p.join_timeout(BOUND).unwrap();
        // None lost, and all handled already: a child that returns waits for that, although
        // messages from different processes have no order with each other.
        assert_eq!(c.timeout(BOUND).get().unwrap(), round * 1_000);
    }
}

fn nap_tell_drop_and_return(c: ActorRef<Counter>) {
    // The actor is busy with this while the tells below arrive (in a record of their own).
    c.cast().nap(200).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    for _ in 0..1_000 {
        c.cast().add(1).unwrap();
    }
    drop(c);
    // Long enough for the flusher to write the tells and drop the last reference to the
    // connection: the child's exit finds it gone from the live ones.
    std::thread::sleep(Duration::from_millis(50));
}

#[test]
fn tells_through_a_dropped_ref_are_handled_before_a_child_reports_it_returned() {
    let c = counter();
    for round in 1..=3u64 {
        let p = reaped(
            Process::new(nap_tell_drop_and_return, c.0.clone())
                .start()
                .unwrap(),
        );
        p.join_timeout(BOUND).unwrap();
        assert_eq!(c.timeout(BOUND).get().unwrap(), round * 1_000);
    }
}

fn tell_ten_and_return(c: ActorRef<Counter>) {
    for _ in 0..10 {
        let _ = c.cast().add(1); // the actor may be dead by now
    }
}

#[test]
fn a_returning_child_does_not_wait_on_an_actor_killed_before_it_handled_its_tells() {
    let c = counter();
    c.cast().nap(3_000).unwrap(); // busy: the child's tells wait behind this
    let p = reaped(
        Process::new(tell_ten_and_return, c.0.clone())
            .start()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        p.is_alive(),
        "the child should be waiting for its tells to be handled"
    );
    c.kill().unwrap();
    let killed = Instant::now();
    p.join_timeout(BOUND).unwrap();
    // The child saw the actor's end at once, not after the nap or its 5 s limit.
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "{:?}",
        killed.elapsed()
    );
}

fn ask_and_get_killed(c: ActorRef<Counter>) {
    let _ = c.nap(2_000);
}

#[test]
fn a_caller_killed_mid_ask_does_not_hurt_the_actor() {
    let c = counter();
    let p = reaped(
        Process::new(ask_and_get_killed, c.0.clone())
            .start()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    p.kill().unwrap();
    assert!(p.join_timeout(BOUND).is_err());
    assert_eq!(c.timeout(BOUND).add(5).unwrap(), 5);
}

#[test]
fn init_failures_come_back_from_spawn() {
    struct Picky;
    #[procactor::actor]
    impl Picky {
        fn init(n: i32) -> Result<Self, String> {
            if n < 0 {
                return Err(format!("{n} is negative"));
            }
            if n == 0 {
                panic!("zero!");
            }
            Ok(Picky)
        }
        pub fn ping(&self) {}
    }
    match procactor::spawn::<Picky>(-1).map_err(|e| e.exit_reason().cloned()) {
        Err(Some(ExitReason::InitFailed { message })) => assert_eq!(message, "-1 is negative"),
        other => panic!("unexpected: {other:?}"),
    }
    match procactor::spawn::<Picky>(0).map_err(|e| e.exit_reason().cloned()) {
        Err(Some(ExitReason::Panicked { message, .. })) => assert_eq!(message, "zero!"),
        other => panic!("unexpected: {other:?}"),
    }
    let ok = Stopped(procactor::spawn::<Picky>(1).unwrap());
    ok.ping().unwrap();
}

pub struct Other;

#[procactor::actor]
impl Other {
    fn init(_: ()) -> Self {
        Other
    }
    pub fn add(&self, n: i32) -> i32 {
        n
    }
}

#[test]
fn registry_and_schema_mismatch() {
    let c = counter();
    procactor::actor::register("registry-test-counter", &c).unwrap();
    assert!(matches!(
        procactor::actor::register("registry-test-counter", &c),
        Err(Error::NameTaken(_))
    ));
    let found = procactor::actor::whereis::<Counter>("registry-test-counter")
        .unwrap()
        .unwrap();
    assert_eq!(found.pid(), c.pid());
    assert_eq!(found.add(3).unwrap(), 3);
    match procactor::actor::whereis::<Other>("registry-test-counter") {
        Err(Error::SchemaMismatch { ours, theirs }) => {
            assert!(ours.contains("OtherMsg"), "{ours}");
            assert!(theirs.contains("CounterMsg"), "{theirs}");
        }
        other => panic!("unexpected: {other:?}"),
    }
    assert!(procactor::actor::whereis::<Counter>("nobody-has-this")
        .unwrap()
        .is_none());
    // The name goes with the actor.
    c.kill().unwrap();
    c.join_timeout(BOUND).unwrap();
    assert!(eventually(BOUND, || procactor::actor::whereis::<Counter>(
        "registry-test-counter"
    )
    .unwrap()
    .is_none()));
}

#[test]
fn bounded_mailbox_pushes_back() {
    let c = Stopped(
        ActorBuilder::<Counter>::new(None)
            .mailbox(Mailbox::bounded(2))
            .spawn()
            .unwrap(),
    );
    c.cast().nap(400).unwrap(); // busy; its slot is held until handled
    c.cast().add(1).unwrap();
    let full = c.try_cast().add(1).unwrap_err();
    assert!(matches!(full, Error::MailboxFull { .. }), "{full:?}");
    // The raw forms hand the message back, as crossbeam's TrySendError does: nothing is lost.
    let refused = c.try_tell(CounterMsg::Add { n: 7 }).unwrap_err();
    assert!(refused.is_full(), "{refused:?}");
    assert!(matches!(refused.into_inner(), CounterMsg::Add { n: 7 }));
    let t = Instant::now();
    let timed_out = c.tell_timeout(CounterMsg::Add { n: 1 }, Duration::from_millis(50));
    let timed_out = timed_out.unwrap_err();
    assert!(timed_out.is_timeout());
    assert!(matches!(timed_out.into_inner(), CounterMsg::Add { n: 1 }));
    assert!(t.elapsed() >= Duration::from_millis(50));
    // A plain tell waits for room instead.
    c.cast().add(1).unwrap();
    assert_eq!(c.timeout(BOUND).get().unwrap(), 2);
}

#[test]
fn a_message_that_fails_to_encode_gives_its_mailbox_slot_back() {
    let c = Stopped(
        ActorBuilder::<Counter>::new(None)
            .mailbox(Mailbox::bounded(1))
            .spawn()
            .unwrap(),
    );
    for _ in 0..3 {
        // Bounded forms: a leaked slot fails the test instead of hanging it.
        let asked = c.timeout(Duration::from_secs(2)).fussy(Fussy(true));
        assert!(matches!(asked, Err(Error::Encode { .. })), "{asked:?}");
        let told = c.try_cast().fussy(Fussy(true));
        assert!(matches!(told, Err(Error::Encode { .. })), "{told:?}");
    }
    c.try_cast().add(1).unwrap();
    assert_eq!(c.timeout(BOUND).get().unwrap(), 1);
    assert!(!c.timeout(BOUND).fussy(Fussy(false)).unwrap());
}

/// Runs in a child that has no connection to the actor yet: its first use is a `try_cast`,
/// retried until it goes. Returns how long the slowest try took, in milliseconds.
fn try_cast_first(c: ActorRef<Counter>) -> Result<u64, String> {
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    loop {
        let t = Instant::now();
        let r = c.try_cast().add(5);
        slowest = slowest.max(t.elapsed());
        match r {
            Ok(()) => return Ok(slowest.as_millis() as u64),
            // Not connected yet: the hello went, the welcome is read by a later try.
            Err(e) if e.is_timeout() && start.elapsed() < BOUND => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => return Err(format!("{e:?}")),
        }
    }
}

#[test]
fn a_try_cast_from_a_process_not_yet_connected_goes_without_waiting() {
    let c = Stopped(procactor::spawn::<Counter>(None).unwrap());
    for _ in 0..3 {
        let p = reaped(Process::new(try_cast_first, c.0.clone()).start().unwrap());
        let slowest = p.join_timeout(BOUND).unwrap().unwrap();
        // Never a wait for the actor's answer (a few ms at most for the connect itself).
        assert!(slowest < 1_000, "a try took {slowest} ms");
    }
    assert_eq!(c.timeout(BOUND).get().unwrap(), 15);
    // While the actor is busy, a fresh process's first try returns at once.
    c.cast().nap(1_500).unwrap();
    let p = reaped(Process::new(try_cast_first, c.0.clone()).start().unwrap());
    let slowest = p.join_timeout(BOUND).unwrap().unwrap();
    assert!(
        slowest < 1_000,
        "a try took {slowest} ms while the actor was busy"
    );
    assert_eq!(c.timeout(BOUND).get().unwrap(), 20);
}

/// An actor's `try_cast` to itself, from a handler: the first returns at once (the actor cannot
/// answer its own hello while it handles a message); a later handler's goes.
#[test]
fn a_try_cast_to_itself_from_a_handler_never_waits_on_itself() {
    let c = Stopped(procactor::spawn::<Counter>(None).unwrap());
    let (first, ms) = c.timeout(BOUND).self_try().unwrap();
    assert!(ms < 1_000, "the first try took {ms} ms");
    assert!(first.is_none() || first == Some(true), "{first:?}");
    let t = Instant::now();
    loop {
        let (went, ms) = c.timeout(BOUND).self_try().unwrap();
        assert!(ms < 1_000, "a try took {ms} ms");
        if went == Some(true) {
            break;
        }
        assert!(t.elapsed() < BOUND, "never connected to itself");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The tell that went arrives (on the actor's own connection to itself: no order with ours,
    // so it is waited for).
    assert!(eventually(BOUND, || c.timeout(BOUND).get().unwrap() >= 1));
}

#[test]
fn a_handled_message_whose_reply_is_lost_says_so_not_rejected() {
    let c = Stopped(procactor::spawn::<Counter>(None).unwrap());
    // The message had its effect: the error says so (retrying would add twice).
    match c.timeout(BOUND).add_unanswered(3) {
        Err(Error::ReplyLost { reason, pid, .. }) => {
            assert!(reason.contains("could not be encoded"), "{reason}");
            assert_eq!(pid, c.pid());
        }
        other => panic!("unexpected: {:?}", other.map(|_| ())),
    }
    assert_eq!(c.timeout(BOUND).get().unwrap(), 3);
    // A message that never decoded had none: that one is Rejected.
    match c.timeout(BOUND).add_picky(Picky(5)) {
        Err(Error::Rejected { reason, .. }) => {
            assert!(reason.contains("could not decode"), "{reason}")
        }
        other => panic!("unexpected: {other:?}"),
    }
    assert_eq!(c.timeout(BOUND).get().unwrap(), 3);
}

fn fill_mailbox(c: ActorRef<Counter>) {
    loop {
        let _ = c.cast().add(1);
    }
}

#[test]
fn a_killed_sender_gives_its_mailbox_slots_back() {
    let c = Stopped(
        ActorBuilder::<Counter>::new(None)
            .mailbox(Mailbox::bounded(4))
            .spawn()
            .unwrap(),
    );
    c.cast().nap(300).unwrap();
    let p = reaped(Process::new(fill_mailbox, c.0.clone()).start().unwrap());
    std::thread::sleep(Duration::from_millis(150));
    p.kill().unwrap();
    let _ = p.join_timeout(BOUND);
    // Everything the killed sender took is handled or given back: the mailbox has room again.
    assert!(eventually(BOUND, || c.try_cast().add(0).is_ok()));
    assert!(c.timeout(BOUND).get().unwrap() <= 4);
}

/// Frames by hand, to feed the mailbox garbage through a real connection.
mod raw {
    use std::io::IoSlice;
    use std::os::fd::OwnedFd;

    use rustix::net::{
        connect, recv, sendmsg, socket, AddressFamily, RecvFlags, SendAncillaryBuffer, SendFlags,
        SocketAddrUnix, SocketType,
    };

    /// The actor's socket address, from the ref's serialized form (`{id, name, pid, addr}`).
    pub fn address<A>(r: &procactor::ActorRef<A>) -> String {
        #[derive(serde::Deserialize)]
        struct RefWire {
            _id: u64,
            _name: String,
            _pid: u32,
            addr: String,
        }
        postcard::from_bytes::<RefWire>(&postcard::to_allocvec(r).unwrap())
            .unwrap()
            .addr
    }

    pub fn connect_to(addr: &str) -> OwnedFd {
        let fd = socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
        connect(&fd, &SocketAddrUnix::new(addr).unwrap()).unwrap();
        fd
    }

    pub fn send(fd: &OwnedFd, kind: u8, fp: u64, payload: &[u8]) {
        let mut head = vec![kind];
        head.extend_from_slice(&fp.to_le_bytes());
        let parts = [IoSlice::new(&head), IoSlice::new(payload)];
        let _ = sendmsg(
            fd,
            &parts,
            &mut SendAncillaryBuffer::default(),
            SendFlags::NOSIGNAL,
        );
    }

    /// One frame's kind, fingerprint field and payload.
    pub fn recv_frame(fd: &OwnedFd) -> (u8, u64, Vec<u8>) {
        let mut buf = vec![0u8; 70_000];
        let (n, _) = recv(fd, &mut buf[..], RecvFlags::empty()).unwrap();
        assert!(n >= 9, "short frame");
        (
            buf[0],
            u64::from_le_bytes(buf[1..9].try_into().unwrap()),
            buf[9..n].to_vec(),
        )
    }
}

#[test]
fn garbage_in_the_mailbox_is_answered_and_survived() {
    let c = counter();
    let addr = raw::address(&c.0);

    // Garbage instead of a hello: the connection is dropped, the actor goes on.
    let junk = raw::connect_to(&addr);
    raw::send(&junk, 0xee, 1, b"\xff\xfe\xfd");
    assert_eq!(c.timeout(BOUND).add(1).unwrap(), 1);

    // A proper hello (postcard: variant 0, then the two schemas), then garbage messages.
    let fd = raw::connect_to(&addr);
    #[derive(serde::Serialize)]
    enum Role {
        Caller {
            msg: (String, u64),
            reply: (String, u64),
        },
    }
    let (m, r) = (CounterMsg::schema(), CounterReply::schema());
    let hello = postcard::to_stdvec(&Role::Caller {
        msg: (m.name.into(), m.fingerprint),
        reply: (r.name.into(), r.fingerprint),
    })
    .unwrap();
    raw::send(&fd, 20, 0, &hello);
    assert_eq!(raw::recv_frame(&fd).0, 21, "welcome");
    // A batch: a garbage tell (ignored), then a garbage ask with id 7 (answered with an error).
    let mut batch = vec![1u8];
    batch.extend_from_slice(&3u32.to_le_bytes());
    batch.push(0);
    batch.extend_from_slice(b"\xff\xff\xff");
    batch.push(2);
    batch.extend_from_slice(&2u32.to_le_bytes());
    batch.push(0);
    batch.extend_from_slice(&7u64.to_le_bytes());
    batch.extend_from_slice(b"\x63\x00");
    raw::send(&fd, 23, 0, &batch);
    let (kind, id, why) = raw::recv_frame(&fd);
    assert_eq!((kind, id), (25, 7), "a failure reply to request 7");
    assert!(String::from_utf8_lossy(&why).contains("decode"));
    // A truncated envelope: logged and dropped.
    raw::send(&fd, 23, 0, &[2, 0xff, 0xff, 0xff, 0x7f, 0]);
    // The actor still serves everyone.
    assert_eq!(c.timeout(BOUND).add(1).unwrap(), 2);
}

pub struct Watcher {
    downs: Vec<Down>,
    exits: Vec<Down>,
}

#[procactor::actor]
impl Watcher {
    fn init(trap: bool, ctx: &mut Context<Self>) -> Self {
        ctx.trap_exit(trap);
        Watcher {
            downs: Vec::new(),
            exits: Vec::new(),
        }
    }

    pub fn watch(&mut self, other: ActorRef<Counter>, ctx: &mut Context<Self>) {
        ctx.monitor(&other).unwrap();
    }

    pub fn link_to(&mut self, other: ActorRef<Counter>, ctx: &mut Context<Self>) {
        ctx.link(&other).unwrap();
    }

    pub fn spawn_child(&mut self, ctx: &mut Context<Self>) -> ActorRef<Counter> {
        let c = ctx.spawn::<Counter>(None).unwrap();
        ctx.monitor(&c).unwrap();
        c
    }

    pub fn downs(&self) -> Vec<Down> {
        self.downs.clone()
    }

    pub fn exits(&self) -> Vec<Down> {
        self.exits.clone()
    }

    fn on_down(&mut self, down: Down) {
        self.downs.push(down);
    }

    fn on_exit(&mut self, exit: Down) {
        self.exits.push(exit);
    }
}

#[test]
fn monitors_deliver_down_with_the_reason() {
    let w = Stopped(procactor::spawn::<Watcher>(false).unwrap());
    let c = counter();
    w.watch(c.0.clone()).unwrap();
    let _ = c.explode("watched".into());
    assert!(eventually(BOUND, || !w.downs().unwrap().is_empty()));
    let d = &w.downs().unwrap()[0];
    assert_eq!(d.id, c.id());
    assert!(matches!(&d.reason, ExitReason::Panicked { message, .. } if message == "watched"));

    // A child of the watcher killed by a signal: the exact reason (the watcher reaps it).
    let child = w.spawn_child().unwrap();
    child.kill().unwrap();
    assert!(eventually(BOUND, || w.downs().unwrap().len() == 2));
    assert_eq!(
        w.downs().unwrap()[1].reason,
        ExitReason::Killed { signal: 9 }
    );
}

#[test]
fn linked_actors_die_together_unless_trapping() {
    let w = Stopped(procactor::spawn::<Watcher>(false).unwrap());
    let c = counter();
    w.link_to(c.0.clone()).unwrap();
    let _ = c.explode("linked".into());
    match w.join_timeout(BOUND).unwrap() {
        ExitReason::Linked { name, reason } => {
            assert_eq!(name, "Counter");
            assert!(matches!(*reason, ExitReason::Panicked { .. }));
        }
        other => panic!("unexpected: {other:?}"),
    }

    // Links go both ways: the watcher dying takes the counter with it.
    let w = Stopped(procactor::spawn::<Watcher>(false).unwrap());
    let c = counter();
    w.link_to(c.0.clone()).unwrap();
    w.kill().unwrap();
    assert!(matches!(
        c.join_timeout(BOUND).unwrap(),
        ExitReason::Linked { .. }
    ));

    // Trapping: the death is a message.
    let t = Stopped(procactor::spawn::<Watcher>(true).unwrap());
    let c = counter();
    t.link_to(c.0.clone()).unwrap();
    c.kill().unwrap();
    assert!(eventually(BOUND, || !t.exits().unwrap().is_empty()));
    assert!(t.downs().unwrap().is_empty());
}

#[test]
fn two_hundred_actors_at_once_all_answer_and_all_are_reaped() {
    let actors: Vec<Stopped<Counter>> =
        procactor::actor::spawn_many::<Counter>((0..200).map(|_| None))
            .unwrap()
            .into_iter()
            .map(Stopped)
            .collect();
    for (i, a) in actors.iter().enumerate() {
        assert_eq!(a.timeout(BOUND).add(i as u64).unwrap(), i as u64);
    }
    let pids: Vec<u32> = actors.iter().map(|a| a.pid()).collect();
    for a in &actors {
        a.stop().unwrap();
    }
    for a in &actors {
        assert_eq!(a.join_timeout(BOUND).unwrap(), ExitReason::Normal);
    }
    assert!(pids.iter().all(|p| !pid_alive(*p)));
}

pub struct Forker;

fn sleep_secs(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

#[procactor::actor]
impl Forker {
    fn init(_: ()) -> Self {
        Forker
    }

    /// Starts a helper with the Fork start method (not a daemon: it may outlive us).
    pub fn helper(&mut self, secs: u64) -> u32 {
        let h = Process::new(sleep_secs, secs)
            .start_method(procactor::StartMethod::Fork)
            .start()
            .unwrap();
        let pid = h.pid();
        std::mem::forget(h);
        pid
    }

    pub fn ping(&self) -> u32 {
        7
    }
}

fn look_at_the_dead_forker(f: ActorRef<Forker>) -> (bool, String) {
    let alive = f.is_alive();
    let ask = f.timeout(Duration::from_secs(2)).ping();
    (alive, format!("{ask:?}"))
}

fn kill_the_dead_forker(f: ActorRef<Forker>) {
    let _ = f.kill();
}

/// An actor forks a helper that outlives it: the helper lets go of the actor's listening socket,
/// so a killed actor is gone for everyone (`is_alive`, asks, its name), and `kill()` from a
/// process other than the spawner never signals the pid it had (here, as root, made to belong
/// to an innocent process at once).
#[test]
fn a_killed_actor_is_gone_even_if_a_process_it_forked_lives_on() {
    let f = procactor::spawn::<Forker>(()).unwrap();
    let helper = f.timeout(BOUND).helper(60).unwrap();
    struct Reap(u32);
    impl Drop for Reap {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the helper, a process of this test.
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
    let _helper = Reap(helper);
    procactor::actor::register("forker", &f).unwrap();
    let old = f.pid();
    f.kill().unwrap();
    // Not joined: the socket's file stays (a killed actor cannot remove it, and only a join in
    // the spawner does); only the listener's fate in the helper decides.
    assert!(eventually(BOUND, || !pid_alive(old)));

    let (alive, ask) = reaped(
        Process::new(look_at_the_dead_forker, f.clone())
            .start()
            .unwrap(),
    )
    .join_timeout(BOUND)
    .unwrap();
    assert!(!alive, "is_alive() is true for a killed actor");
    assert!(
        ask.contains("ActorDied"),
        "an ask to the killed actor gave {ask}"
    );
    let g = Stopped(procactor::spawn::<Forker>(()).unwrap());
    procactor::actor::register("forker", &g).unwrap();

    if rustix::process::getuid().as_raw() == 0 {
        // An innocent process of ours gets the dead actor's pid.
        let mut victim = None;
        for _ in 0..20 {
            if std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", old - 1)).is_err() {
                break;
            }
            let mut c = std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap();
            if c.id() == old {
                victim = Some(c);
                break;
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut victim) = victim {
            reaped(
                Process::new(kill_the_dead_forker, f.clone())
                    .start()
                    .unwrap(),
            )
            .join_timeout(BOUND)
            .unwrap();
            std::thread::sleep(Duration::from_millis(200));
            let survived = victim.try_wait().unwrap().is_none();
            let _ = victim.kill();
            let _ = victim.wait();
            assert!(
                survived,
                "kill() from a non-spawner killed pid {old}, now an unrelated process"
            );
        }
    }
    f.join_timeout(BOUND).unwrap();
}
