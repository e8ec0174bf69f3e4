//! Frames written by hand, to play a broken or hostile peer on real sockets: what procactor's own
//! code would never send (lying lengths, stalled side streams, garbage), byte for byte as the
//! wire format of `runtime/src/wire.rs` and `runtime/src/actor/proto.rs` lays it out.

use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::net::{
    connect, recv, sendmsg, socket_with, AddressFamily, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

/// Frame kinds.
pub const KIND_VALUE: u8 = 1;
pub const KIND_BYTES: u8 = 2;
pub const LARGE: u8 = 0x80;
pub const HELLO: u8 = 20;
pub const WELCOME: u8 = 21;
pub const BATCH: u8 = 23;
pub const REPLY: u8 = 24;
pub const FAILED: u8 = 25;
pub const EXIT: u8 = 26;

/// The socket address of an actor (or a manager, through one of its proxies): their serialized
/// forms start with the ref `{id, name, pid, addr}`.
pub fn address<T: serde::Serialize>(handle: &T) -> String {
    #[derive(serde::Deserialize)]
    struct RefPrefix {
        _id: u64,
        _name: String,
        _pid: u32,
        addr: String,
    }
    let bytes = postcard::to_allocvec(handle).unwrap();
    postcard::take_from_bytes::<RefPrefix>(&bytes)
        .unwrap()
        .0
        .addr
}

/// A raw SEQPACKET connection to a socket path.
pub fn connect_to(addr: &str) -> OwnedFd {
    // Close-on-exec: a process another test starts meanwhile must not keep it open (a test that
    // closes it expects the peer to see the hang-up).
    let fd = socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    connect(&fd, &SocketAddrUnix::new(addr).unwrap()).unwrap();
    fd
}

/// Sends one frame: `[kind][fingerprint le64][payload]`, with `fds` attached.
pub fn send_frame(fd: BorrowedFd, kind: u8, fingerprint: u64, payload: &[u8], fds: &[BorrowedFd]) {
    let mut head = vec![kind];
    head.extend_from_slice(&fingerprint.to_le_bytes());
    let parts = [IoSlice::new(&head), IoSlice::new(payload)];
    let mut space = vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    }
    let _ = sendmsg(fd, &parts, &mut control, SendFlags::NOSIGNAL);
}

/// Sends the 17-byte header of a large frame that announces `len` bytes on `side`.
pub fn send_large_header(fd: BorrowedFd, kind: u8, fingerprint: u64, len: u64, side: BorrowedFd) {
    send_frame(fd, kind | LARGE, fingerprint, &len.to_le_bytes(), &[side]);
}

/// One frame's kind, fingerprint field and payload, if one comes within `timeout`.
pub fn recv_frame(fd: BorrowedFd, timeout: Duration) -> Option<(u8, u64, Vec<u8>)> {
    rustix::net::sockopt::set_socket_timeout(
        fd,
        rustix::net::sockopt::Timeout::Recv,
        Some(timeout),
    )
    .unwrap();
    let mut buf = vec![0u8; 70_000];
    let (n, _) = recv(fd, &mut buf[..], RecvFlags::empty()).ok()?;
    if n < 9 {
        return None;
    }
    Some((
        buf[0],
        u64::from_le_bytes(buf[1..9].try_into().unwrap()),
        buf[9..n].to_vec(),
    ))
}

/// A caller's hello for an actor with these message and reply schemas (postcard: variant 0 of
/// `Role`, then the two `(name, fingerprint)` pairs).
pub fn caller_hello(msg: procactor::actor::Schema, reply: procactor::actor::Schema) -> Vec<u8> {
    #[derive(serde::Serialize)]
    enum Role {
        Caller {
            msg: (String, u64),
            reply: (String, u64),
        },
    }
    postcard::to_stdvec(&Role::Caller {
        msg: (msg.name.into(), msg.fingerprint),
        reply: (reply.name.into(), reply.fingerprint),
    })
    .unwrap()
}

/// Connects to an actor as a caller of these schemas and reads its welcome.
pub fn connect_as_caller(
    addr: &str,
    msg: procactor::actor::Schema,
    reply: procactor::actor::Schema,
) -> OwnedFd {
    let fd = connect_to(addr);
    send_frame(fd.as_fd(), HELLO, 0, &caller_hello(msg, reply), &[]);
    let (kind, _, _) = recv_frame(fd.as_fd(), super::BOUND).expect("a welcome");
    assert_eq!(kind, WELCOME, "welcome");
    fd
}

/// One envelope of a batch: `[op][len le32][nfds][id le64, asks only][payload]`.
pub fn envelope(op: u8, id: u64, payload: &[u8]) -> Vec<u8> {
    let mut e = vec![op];
    e.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    e.push(0);
    if op == 2 {
        e.extend_from_slice(&id.to_le_bytes());
    }
    e.extend_from_slice(payload);
    e
}

/// A process's peak resident memory (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A stream socket pair: `(ours, theirs)`, ours to write a side stream's bytes (or not).
pub fn stream_pair() -> (OwnedFd, OwnedFd) {
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .unwrap()
}

/// A TCP connection on loopback whose send queue cannot drain (the far end never reads) and
/// whose SO_LINGER is `secs`: whoever closes its last descriptor waits in close(2) until the
/// linger time passes or the far end goes. Returns (that socket, the far end, the listener).
pub fn lingering_tcp(secs: u64) -> (OwnedFd, OwnedFd, OwnedFd) {
    use rustix::net::*;
    let l = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    bind(&l, &SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0)).unwrap();
    sockopt::set_socket_recv_buffer_size(&l, 4096).unwrap();
    listen(&l, 1).unwrap();
    let addr = getsockname(&l).unwrap();
    let c = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    sockopt::set_socket_send_buffer_size(&c, 4096).unwrap();
    connect(&c, &addr).unwrap();
    let s = accept(&l).unwrap();
    // Fill the far end's window and our send buffer: until nothing more goes for 300 ms.
    let chunk = vec![0u8; 65536];
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(300) {
        match send(&c, &chunk, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
            Ok(_) => quiet_since = Instant::now(),
            Err(rustix::io::Errno::AGAIN) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("{e}"),
        }
    }
    sockopt::set_socket_linger(&c, Some(Duration::from_secs(secs))).unwrap();
    (c, s, l)
}

/// Hands a lingering TCP socket to `addr`, in a record that is not even a hello, so that the
/// receiver holds the last reference to it; returns what must stay open meanwhile. Our own
/// close must come before the receiver's: we close only if the receiver has not hung up yet,
/// and should we still lose that race (our close is then the one that lingers), a watchdog cuts
/// it short by closing the far end, and we try again.
pub fn freeze(addr: &str, linger: u64) -> Vec<OwnedFd> {
    use std::sync::Mutex;
    for _ in 0..20 {
        let (c, far, listener) = lingering_tcp(linger);
        let conn = connect_to(addr);
        send_frame(conn.as_fd(), HELLO, 0, b"", &[c.as_fd()]);
        let mut pfd = [rustix::event::PollFd::new(
            &conn,
            rustix::event::PollFlags::RDHUP,
        )];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let _ = rustix::event::poll(&mut pfd, Some(&zero));
        if !pfd[0].revents().is_empty() {
            continue; // the receiver dropped it already: our close would linger
        }
        let far = Arc::new(Mutex::new(Some(far)));
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watchdog = {
            let (far, closed) = (far.clone(), closed.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                if !closed.load(std::sync::atomic::Ordering::SeqCst) {
                    far.lock().unwrap().take(); // our close lingers: end it
                }
            })
        };
        drop(c);
        closed.store(true, std::sync::atomic::Ordering::SeqCst);
        watchdog.join().unwrap();
        let kept = far.lock().unwrap().take();
        if let Some(far) = kept {
            return vec![far, listener, conn];
        }
    }
    panic!("could not hand over a lingering socket in 20 tries");
}
