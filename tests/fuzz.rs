//! Property-based fuzzing (proptest) against live processes: generated and mutated frames on
//! real sockets to a running actor (hellos, batches of envelopes, large frames) and to a child
//! reading a typed pipe. The peer must survive every case and go on serving correctly, and leave
//! no descriptor behind. `PROCACTOR_FUZZ_CASES` sets the cases (default 128); each test prints
//! its count. The decoders themselves are fuzzed in-process by the runtime's unit tests.

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use common::raw::{self, BATCH, HELLO, KIND_BYTES, KIND_VALUE};
use common::{reaped, BOUND};
use procactor::{ActorRef, Connection, Message, Pipe, Process};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

procactor::test_support!();

fn cases() -> u32 {
    std::env::var("PROCACTOR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

pub struct Echo {
    n: u64,
}

#[procactor::actor]
impl Echo {
    fn init(_: ()) -> Self {
        Echo { n: 0 }
    }

    pub fn add(&mut self, k: u64) -> u64 {
        self.n = self.n.wrapping_add(k);
        self.n
    }

    pub fn echo(&self, s: String) -> String {
        s
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Bytes a caller may send: a valid encoding with a few changes, or noise.
fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        proptest::collection::vec((0..len.max(1), any::<u8>()), 0..4).prop_map(move |edits| {
            let mut v = valid.clone();
            for (i, b) in edits {
                if i < v.len() {
                    v[i] = b;
                }
            }
            v
        }),
    ]
}

/// What one fuzz case sends on one fresh connection.
#[derive(Debug, Clone)]
enum Case {
    /// A hello (perhaps broken), then frames.
    Hello(Vec<u8>, Vec<(u8, Vec<u8>)>),
    /// Frames with no hello.
    NoHello(Vec<(u8, Vec<u8>)>),
    /// A large frame whose side is a memory file of some size, announcing some length.
    Large {
        hello: bool,
        file: u32,
        announced: u32,
    },
}

/// Frames after (or instead of) a hello: mostly batches of a tell and an ask, mutated.
fn frames() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    let mut batch = raw::envelope(1, 0, &postcard::to_stdvec(&(0u32, 5u64)).unwrap());
    batch.extend(raw::envelope(
        2,
        9,
        &postcard::to_stdvec(&(1u32, "hi")).unwrap(),
    ));
    proptest::collection::vec(
        (
            prop_oneof![Just(BATCH), Just(HELLO), Just(KIND_VALUE), any::<u8>()],
            mutated(batch),
        ),
        0..4,
    )
}

fn case() -> impl Strategy<Value = Case> {
    let hello = raw::caller_hello(EchoMsg::schema(), EchoReply::schema());
    prop_oneof![
        (mutated(hello), frames()).prop_map(|(h, f)| Case::Hello(h, f)),
        frames().prop_map(Case::NoHello),
        (any::<bool>(), 0u32..300_000, 0u32..300_000).prop_map(|(hello, file, announced)| {
            Case::Large {
                hello,
                file,
                announced,
            }
        }),
    ]
}

fn play(addr: &str, c: &Case) -> OwnedFd {
    let fd = raw::connect_to(addr);
    let hello = raw::caller_hello(EchoMsg::schema(), EchoReply::schema());
    let send_all = |frames: &[(u8, Vec<u8>)]| {
        for (kind, bytes) in frames {
            raw::send_frame(fd.as_fd(), *kind, 0, bytes, &[]);
        }
    };
    match c {
        Case::Hello(h, frames) => {
            raw::send_frame(fd.as_fd(), HELLO, 0, h, &[]);
            send_all(frames);
        }
        Case::NoHello(frames) => send_all(frames),
        Case::Large {
            hello: say_hello,
            file,
            announced,
        } => {
            if *say_hello {
                raw::send_frame(fd.as_fd(), HELLO, 0, &hello, &[]);
            }
            let f = rustix::fs::memfd_create("fuzz", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
            rustix::fs::ftruncate(&f, u64::from(*file)).unwrap();
            raw::send_large_header(fd.as_fd(), BATCH, 0, u64::from(*announced), f.as_fd());
        }
    }
    fd
}

#[test]
fn a_live_actor_survives_fuzzed_hellos_and_envelopes() {
    let a: ActorRef<Echo> = procactor::spawn::<Echo>(()).unwrap();
    let addr = raw::address(&a);
    let pid = a.pid();
    assert_eq!(a.timeout(BOUND).echo("warm".into()).unwrap(), "warm");
    let fds_before = open_fds(pid);
    let n = std::cell::Cell::new(0u32);
    let result = runner().run(&case(), |c| {
        let fd = play(&addr, &c);
        // Every case: the actor still answers a real caller, correctly.
        let s = format!("case {}", n.get());
        prop_assert_eq!(a.timeout(BOUND).echo(s.clone()).unwrap(), s);
        drop(fd);
        n.set(n.get() + 1);
        Ok(())
    });
    let n = n.get();
    result.unwrap();
    assert_eq!(a.pid(), pid);
    // Every raw connection is closed: the actor let go of each one.
    assert!(
        common::eventually(BOUND, || open_fds(pid) <= fds_before),
        "the actor holds {} descriptors, {} before",
        open_fds(pid),
        fds_before
    );
    println!("fuzz: live actor: {n} cases (hellos, batches, large frames), actor pid {pid} alive throughout");
    a.stop().unwrap();
    assert_eq!(
        a.join_timeout(BOUND).unwrap(),
        procactor::ExitReason::Normal
    );
}

/// Reads a typed pipe until `(u64::MAX, "end")`; counts the frames, and returns the good values.
fn typed_reader(conn: Connection<(u64, String)>) -> (u64, Vec<u64>) {
    let (mut frames, mut good) = (0, Vec::new());
    loop {
        match conn.recv_timeout(Duration::from_secs(30)) {
            Ok((u64::MAX, s)) if s == "end" => return (frames, good),
            Ok((k, s)) if s == format!("good {k}") => good.push(k),
            Ok(_) | Err(_) => {}
        }
        frames += 1;
    }
}

#[test]
fn a_child_reading_a_typed_pipe_survives_fuzzed_frames() {
    let (ours, theirs) = Pipe::<(u64, String)>::duplex().unwrap();
    let p = reaped(Process::new(typed_reader, theirs).start().unwrap());
    let good_frame = |k: u64| postcard::to_stdvec(&(k, format!("good {k}"))).unwrap();
    let fp = {
        // The fingerprint of our own type, read from a frame the real sender writes.
        let (x, y) = Pipe::<(u64, String)>::duplex().unwrap();
        x.send((0, String::new())).unwrap();
        let fd = y.into_fd();
        raw::recv_frame(fd.as_fd(), BOUND).unwrap().1
    };
    let frame = (
        prop_oneof![Just(KIND_VALUE), Just(KIND_BYTES), any::<u8>()],
        prop_oneof![Just(fp), any::<u64>()],
        mutated(good_frame(7)),
    );
    let sent = std::cell::Cell::new(0u64);
    let result = runner().run(&proptest::collection::vec(frame, 1..5), |frames| {
        for (kind, f, bytes) in &frames {
            raw::send_frame(ours.as_fd(), *kind, *f, bytes, &[]);
        }
        // Interleaved with the noise, a good value must always come through intact.
        let k = sent.get();
        ours.send((k, format!("good {k}"))).unwrap();
        sent.set(k + 1);
        Ok(())
    });
    let sent_good = sent.get();
    result.unwrap();
    ours.send((u64::MAX, "end".into())).unwrap();
    let (frames, good) = p.join_timeout(BOUND).unwrap();
    // Each good value arrived, in order (a fuzzed frame may happen to be a good value too).
    let mut want = 0;
    for k in &good {
        if *k == want {
            want += 1;
        }
    }
    assert_eq!(want, sent_good, "good values lost: {good:?}");
    println!(
        "fuzz: typed pipe: {} cases, {frames} frames read by the child, all {sent_good} good values whole and in order",
        cases()
    );
}
