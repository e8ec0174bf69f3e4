//! Seed port: one message sent through a Pipe and printed by the receiver.
//!
//! Python:
//! ```python
//! def receiver(conn): print("child got:", conn.recv())
//! a, b = Pipe(); p = Process(target=receiver, args=(b,)); p.start()
//! a.send({"greeting": "hello", "n": 42}); p.join()
//! ```
use procactor::{Connection, Pipe, Process};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Message {
    greeting: String,
    n: u32,
}

fn receiver(conn: Connection<Message>) {
    let msg = conn.recv().expect("a message");
    println!("[{}] got: {msg:?}", procactor::current_process().name);
}

#[procactor::main]
fn main() -> Result<(), procactor::Error> {
    let (parent_end, child_end) = Pipe::<Message>::duplex()?;
    let p = Process::new(receiver, child_end).name("receiver").start()?;
    parent_end.send(Message {
        greeting: "hello".into(),
        n: 42,
    })?;
    p.join()?;
    Ok(())
}
