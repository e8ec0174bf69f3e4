//! CPython's `multiprocessing.connection` and procactor's framing and authkey challenge
//! (`procactor_os::cpython`), against the real `python3`: a Python client to our listener, our
//! client to a Python listener, both with the right key and a wrong one, empty and 16 MiB
//! messages, a peer that leaves mid-handshake, and the 3.12 `{sha256}` answer byte for byte.
//!
//! The driving here is plain blocking sockets with timeouts: the sans-I/O protocol is what is
//! tested. Without `python3` the tests say so and pass, unless `PROCACTOR_REQUIRE_PYTHON` is set
//! (`.ci/run` sets it, and installs python3 when it is missing).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use procactor_os::cpython::{
    answer, challenge, frame_header, parse_frame_header, verify, CHALLENGE, FAILURE, HANDSHAKE_MAX,
    MAX_HEADER, WELCOME,
};
use procactor_os::error::Error;

const KEY: &[u8] = b"the right key";
const BOUND: Duration = Duration::from_secs(60);
const BIG: usize = 16 << 20;

/// `python3`, or `None` (and why) if this machine has none.
fn python() -> Option<Command> {
    let found = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("PROCACTOR_REQUIRE_PYTHON").is_none(),
            "python3 is required (PROCACTOR_REQUIRE_PYTHON is set) but not found"
        );
        eprintln!("skipped: no python3 on this machine");
        return None;
    }
    let mut c = Command::new("python3");
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Some(c)
}

/// Waits for `child` at most [`BOUND`]; kills it past that.
fn finish(mut child: Child) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > BOUND {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// The next connection to `listener`, waited for at most [`BOUND`] (a Python side that failed
/// before connecting must fail the test, not hang it).
fn accept_within(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let start = Instant::now();
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return stream(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && start.elapsed() < BOUND => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("no connection within {BOUND:?}: {e}"),
        }
    }
}

/// Waits for `child` (see [`finish`]) and checks the one line it printed.
fn assert_python_said(child: Child, line: &str) {
    let out = finish(child);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), line, "{out:?}");
}

fn stream(s: TcpStream) -> TcpStream {
    s.set_read_timeout(Some(BOUND)).unwrap();
    s.set_write_timeout(Some(BOUND)).unwrap();
    s
}

fn write_frame(s: &mut TcpStream, payload: &[u8]) -> std::io::Result<()> {
    let (h, n) = frame_header(payload.len());
    s.write_all(&h[..n])?;
    s.write_all(payload)
}

/// One frame, its length checked against `limit` before the payload is read.
fn read_frame(s: &mut TcpStream, limit: u64) -> Result<Vec<u8>, Error> {
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::Disconnected,
        _ => Error::io("read", e),
    };
    let mut head = [0u8; MAX_HEADER];
    s.read_exact(&mut head[..4]).map_err(io)?;
    let (len, _) = match parse_frame_header(&head[..4], limit)? {
        Some(parsed) => parsed,
        None => {
            s.read_exact(&mut head[4..]).map_err(io)?;
            parse_frame_header(&head, limit)?.expect("a whole header")
        }
    };
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).map_err(io)?;
    Ok(payload)
}

/// The listener's half first: deliver a challenge and check the answer.
fn deliver(s: &mut TcpStream, key: &[u8]) -> Result<(), Error> {
    let c = challenge()?;
    write_frame(s, &c).map_err(|e| Error::io("write", e))?;
    let response = read_frame(s, HANDSHAKE_MAX as u64)?;
    match verify(key, &c, &response) {
        Ok(()) => write_frame(s, WELCOME).map_err(|e| Error::io("write", e)),
        Err(e) => {
            let _ = write_frame(s, FAILURE);
            Err(e)
        }
    }
}

/// The other half: answer the peer's challenge and read its verdict.
fn answer_challenge(s: &mut TcpStream, key: &[u8]) -> Result<(), Error> {
    let c = read_frame(s, HANDSHAKE_MAX as u64)?;
    let a = answer(key, &c)?;
    write_frame(s, &a).map_err(|e| Error::io("write", e))?;
    match read_frame(s, HANDSHAKE_MAX as u64)? {
        w if w == WELCOME => Ok(()),
        _ => Err(Error::Authentication("the peer refused our digest".into())),
    }
}

/// A Python client of `port` with `key`: sends an empty and a 16 MiB message, prints the length
/// of the reply. Prints the exception's name if anything fails.
fn python_client(port: u16, key: &[u8]) -> Option<Child> {
    let script = format!(
        "from multiprocessing.connection import Client\n\
         try:\n\
         \x20   c = Client(('127.0.0.1', {port}), authkey=b{key:?})\n\
         \x20   c.send_bytes(b'')\n\
         \x20   c.send_bytes(b'x' * {BIG})\n\
         \x20   print(len(c.recv_bytes()))\n\
         except Exception as e:\n\
         \x20   print(type(e).__name__)\n",
        key = String::from_utf8_lossy(key)
    );
    let mut py = python()?;
    Some(py.arg("-c").arg(script).spawn().unwrap())
}

#[test]
fn a_python_client_talks_to_our_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let Some(child) = python_client(port, KEY) else {
        return;
    };
    let mut s = accept_within(&listener);
    // As CPython's Listener.accept: deliver, then answer.
    deliver(&mut s, KEY).unwrap();
    answer_challenge(&mut s, KEY).unwrap();
    assert_eq!(read_frame(&mut s, 64 << 20).unwrap(), b"");
    let big = read_frame(&mut s, 64 << 20).unwrap();
    assert!(big.len() == BIG && big.iter().all(|&b| b == b'x'));
    write_frame(&mut s, b"seven!!").unwrap();
    assert_python_said(child, "7");
}

#[test]
fn a_python_client_with_another_key_is_refused_on_both_sides() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let Some(child) = python_client(port, b"a wrong key") else {
        return;
    };
    let mut s = accept_within(&listener);
    let err = deliver(&mut s, KEY).unwrap_err();
    assert!(matches!(err, Error::Authentication(_)), "{err}");
    assert_python_said(child, "AuthenticationError");
}

/// A Python listener with `key` on an ephemeral port: prints the port, then echoes one message
/// upper-cased and a 16 MiB one's length; prints the exception's name if anything fails.
fn python_listener(key: &[u8]) -> Option<(Child, u16)> {
    let script = format!(
        "import sys\n\
         from multiprocessing.connection import Listener\n\
         with Listener(('127.0.0.1', 0), authkey=b{key:?}) as l:\n\
         \x20   print(l.address[1], flush=True)\n\
         \x20   try:\n\
         \x20       with l.accept() as c:\n\
         \x20           c.send_bytes(c.recv_bytes().upper())\n\
         \x20           c.send_bytes(str(len(c.recv_bytes())).encode())\n\
         \x20           print('served', flush=True)\n\
         \x20   except Exception as e:\n\
         \x20       print(type(e).__name__, flush=True)\n",
        key = String::from_utf8_lossy(key)
    );
    let mut py = python()?;
    let mut child = py.arg("-c").arg(script).spawn().unwrap();
    // The port line, read on a thread so that waiting for it has a bound.
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while out.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let _ = tx.send((line, out));
    });
    let Ok((line, out)) = rx.recv_timeout(BOUND) else {
        let _ = child.kill();
        panic!("the Python listener printed no port within {BOUND:?}");
    };
    child.stdout = Some(out);
    let port = String::from_utf8_lossy(&line).trim().parse().unwrap();
    Some((child, port))
}

#[test]
fn our_client_talks_to_a_python_listener() {
    let Some((child, port)) = python_listener(KEY) else {
        return;
    };
    let mut s = stream(TcpStream::connect(("127.0.0.1", port)).unwrap());
    // As CPython's Client: answer, then deliver.
    answer_challenge(&mut s, KEY).unwrap();
    deliver(&mut s, KEY).unwrap();
    write_frame(&mut s, b"hello").unwrap();
    assert_eq!(read_frame(&mut s, 1 << 20).unwrap(), b"HELLO");
    write_frame(&mut s, &vec![0u8; BIG]).unwrap();
    assert_eq!(
        read_frame(&mut s, 1 << 20).unwrap(),
        BIG.to_string().as_bytes()
    );
    assert_python_said(child, "served");
}

#[test]
fn our_client_with_another_key_is_refused_on_both_sides() {
    let Some((child, port)) = python_listener(KEY) else {
        return;
    };
    let mut s = stream(TcpStream::connect(("127.0.0.1", port)).unwrap());
    let err = answer_challenge(&mut s, b"a wrong key").unwrap_err();
    assert!(matches!(err, Error::Authentication(_)), "{err}");
    drop(s);
    assert_python_said(child, "AuthenticationError");
}

#[test]
fn a_peer_that_leaves_mid_handshake_is_disconnected_not_a_hang() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let Some(mut py) = python() else {
        return;
    };
    // Connects, reads the challenge, and leaves without answering.
    let script = format!(
        "import socket, struct\n\
         s = socket.create_connection(('127.0.0.1', {port}))\n\
         n = struct.unpack('!i', s.recv(4))[0]\n\
         s.recv(n)\n\
         s.close()\n"
    );
    let child = py.arg("-c").arg(script).spawn().unwrap();
    let mut s = accept_within(&listener);
    let t = Instant::now();
    let err = deliver(&mut s, KEY).unwrap_err();
    assert!(matches!(err, Error::Disconnected), "{err}");
    assert!(t.elapsed() < BOUND);
    finish(child);
}

#[test]
fn our_sha256_answer_is_cpython_3_12s_byte_for_byte() {
    let Some(mut py) = python() else {
        return;
    };
    let c = challenge().unwrap();
    let message = &c[CHALLENGE.len()..];
    let ours = answer(KEY, &c).unwrap();
    // What CPython 3.12's _create_response computes: b'{sha256}' + HMAC-SHA256(key, message).
    let script = format!(
        "import hmac, sys\n\
         m = bytes.fromhex('{}')\n\
         sys.stdout.write((b'{{sha256}}' + hmac.new(b{:?}, m, 'sha256').digest()).hex())\n",
        hex(message),
        String::from_utf8_lossy(KEY)
    );
    let out = finish(py.arg("-c").arg(script).spawn().unwrap());
    assert_eq!(String::from_utf8_lossy(&out.stdout), hex(&ours), "{out:?}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// The same, through the public API: procactor's `Listener` and `Client` in CPython's protocol.

use procactor::connection::{Client, Listener};

#[test]
fn a_python_client_talks_to_our_plaintext_listener() {
    let listener = Listener::bind("127.0.0.1:0")
        .unwrap()
        .authkey(KEY)
        .plaintext();
    let procactor::connection::Address::Tcp(addr) = listener.address().clone() else {
        unreachable!()
    };
    let Some(child) = python_client(addr.port(), KEY) else {
        return;
    };
    let c = listener.accept_timeout::<()>(BOUND).unwrap();
    assert_eq!(c.recv_bytes_timeout(BOUND).unwrap(), b"");
    let big = c.recv_bytes_timeout(BOUND).unwrap();
    assert!(big.len() == BIG && big.iter().all(|&b| b == b'x'));
    c.send_bytes(b"seven!!").unwrap();
    assert_python_said(child, "7");
}

#[test]
fn a_python_client_with_another_key_never_gets_past_our_listener() {
    let listener = Listener::bind("127.0.0.1:0")
        .unwrap()
        .authkey(KEY)
        .plaintext();
    let procactor::connection::Address::Tcp(addr) = listener.address().clone() else {
        unreachable!()
    };
    let Some(child) = python_client(addr.port(), b"a wrong key") else {
        return;
    };
    let got = listener.accept_timeout::<()>(Duration::from_secs(3));
    assert!(got.unwrap_err().is_timeout(), "nobody may get in");
    assert_python_said(child, "AuthenticationError");
}

#[test]
fn a_python_client_at_our_encrypting_listener_fails_at_once_and_clearly() {
    let listener = Listener::bind("127.0.0.1:0").unwrap().authkey(KEY);
    let procactor::connection::Address::Tcp(addr) = listener.address().clone() else {
        unreachable!()
    };
    let Some(child) = python_client(addr.port(), KEY) else {
        return;
    };
    let started = Instant::now();
    let got = listener.accept_timeout::<()>(Duration::from_secs(3));
    assert!(got.unwrap_err().is_timeout());
    let out = finish(child);
    let said = String::from_utf8_lossy(&out.stdout);
    // 3.12 raises AuthenticationError ("expected challenge"), 3.11 an AssertionError showing
    // our banner: either way at once, not after the handshake timeout.
    assert!(
        said.contains("AuthenticationError") || said.contains("AssertionError"),
        "python said {said:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[test]
fn our_plaintext_client_talks_to_a_python_listener() {
    let Some((child, port)) = python_listener(KEY) else {
        return;
    };
    let c = Client::new(format!("127.0.0.1:{port}"))
        .authkey(KEY)
        .plaintext()
        .timeout(BOUND)
        .connect::<()>()
        .unwrap();
    c.send_bytes(b"hello").unwrap();
    assert_eq!(c.recv_bytes_timeout(BOUND).unwrap(), b"HELLO");
    c.send_bytes(&vec![0u8; BIG]).unwrap();
    assert_eq!(
        c.recv_bytes_timeout(BOUND).unwrap(),
        BIG.to_string().as_bytes()
    );
    assert_python_said(child, "served");
}

#[test]
fn our_client_with_another_key_or_asking_for_encryption_is_refused_by_a_python_listener() {
    let Some((child, port)) = python_listener(KEY) else {
        return;
    };
    let e = Client::new(format!("127.0.0.1:{port}"))
        .authkey(b"a wrong key")
        .plaintext()
        .timeout(BOUND)
        .connect::<()>()
        .unwrap_err();
    assert!(matches!(e, procactor::Error::Authentication(_)), "{e}");
    assert_python_said(child, "AuthenticationError");

    let Some((child, port)) = python_listener(KEY) else {
        return;
    };
    let e = Client::new(format!("127.0.0.1:{port}"))
        .authkey(KEY)
        .timeout(BOUND)
        .connect::<()>()
        .unwrap_err();
    assert!(
        matches!(&e, procactor::Error::Authentication(why) if why.contains("plaintext")),
        "{e}"
    );
    let _ = finish(child);
}
