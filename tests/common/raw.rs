//! Frames written by hand, to play a broken or hostile peer on real sockets: what procactor's own
//! code would never send (lying lengths, stalled side streams, garbage), byte for byte as the
//! wire format of `runtime/src/wire.rs` and `runtime/src/actor/proto.rs` lays it out.

use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::net::{
    connect, recv, sendmsg, socket, AddressFamily, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketType,
};

/// Frame kinds.
pub const KIND_VALUE: u8 = 1;
pub const KIND_BYTES: u8 = 2;
pub const LARGE: u8 = 0x80;
pub const HELLO: u8 = 20;
pub const WELCOME: u8 = 21;
pub const BATCH: u8 = 23;
pub const FAILED: u8 = 25;

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
    let fd = socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
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
pub fn caller_hello(msg: procactor::Schema, reply: procactor::Schema) -> Vec<u8> {
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
pub fn connect_as_caller(addr: &str, msg: procactor::Schema, reply: procactor::Schema) -> OwnedFd {
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
