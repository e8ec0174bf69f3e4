//! A Python program as the client of a procactor server: CPython's own
//! `multiprocessing.connection.Client(address, authkey=...)`, `send_bytes` and `recv_bytes`,
//! talking to a procactor `Listener` that speaks CPython's protocol (its HMAC challenge, both
//! ways, then its frames).
//!
//! ```text
//! cargo run --release --example python_client                       # starts the Python client
//! cargo run --release --example python_client -- serve 127.0.0.1:6000
//!     # then, from another terminal:
//!     python3 -c "from multiprocessing.connection import Client
//!     c = Client(('127.0.0.1', 6000), authkey=b'example key')
//!     c.send_bytes(b'hello'); print(c.recv_bytes())"
//! ```
//!
//! The link is in the clear (CPython cannot encrypt): keep it on a network you trust, or between
//! procactor peers drop `plaintext()` and it is encrypted.

use std::process::{Command, Stdio};
use std::time::Duration;

use procactor::connection::{Address, Listener};

const KEY: &[u8] = b"example key";

const PYTHON_CLIENT: &str = r#"
import sys
from multiprocessing.connection import Client
host, port = sys.argv[1], int(sys.argv[2])
with Client((host, port), authkey=b'example key') as c:
    for word in [b'hello', b'from', b'python']:
        c.send_bytes(word)
        print(word.decode(), '->', c.recv_bytes().decode())
    c.send_bytes(b'x' * (1 << 20))
    print('1 MiB ->', c.recv_bytes().decode())
"#;

/// Serves one client: every message back upper-cased (a long one: its length).
fn serve_one(listener: &Listener, patience: Duration) -> procactor::Result<usize> {
    let conn = listener.accept_timeout::<()>(patience)?;
    let mut served = 0;
    while let Ok(msg) = conn.recv_bytes_timeout(Duration::from_secs(30)) {
        let reply = if msg.len() > 1024 {
            format!("{} bytes", msg.len()).into_bytes()
        } else {
            msg.to_ascii_uppercase()
        };
        conn.send_bytes(&reply)?;
        served += 1;
    }
    Ok(served)
}

fn main() -> procactor::Result<()> {
    procactor::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [mode, address] = args.as_slice() {
        if mode == "serve" {
            let listener = Listener::bind(address.as_str())?.authkey(KEY).plaintext();
            println!("serving at {}", listener.address());
            loop {
                match serve_one(&listener, Duration::from_secs(3600)) {
                    Ok(n) => println!("a client left after {n} messages"),
                    Err(e) => println!("a client failed: {e}"),
                }
            }
        }
    }
    let listener = Listener::bind("127.0.0.1:0")?.authkey(KEY).plaintext();
    let Address::Tcp(addr) = listener.address().clone() else {
        unreachable!("a TCP address")
    };
    let python = Command::new("python3")
        .arg("-c")
        .arg(PYTHON_CLIENT)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .stdout(Stdio::inherit())
        .spawn();
    let Ok(mut python) = python else {
        println!("python3 is not installed: nothing to talk to");
        return Ok(());
    };
    let served = serve_one(&listener, Duration::from_secs(60))?;
    let status = python
        .wait()
        .map_err(|e| procactor::Error::io("wait for python3", e))?;
    println!("served {served} messages from a Python client ({status})");
    assert_eq!(served, 4);
    assert!(status.success());
    Ok(())
}
