//! The Python seed's `Process` subclass that answers "hello" with "HELLO" over a Pipe, ported
//! twice: as a process serving a pipe, and as an actor.
//!
//! ```python
//! class Upper(Process):
//!     def __init__(self, conn):
//!         super().__init__()
//!         self.conn = conn
//!     def run(self):
//!         while (msg := self.conn.recv()) is not None:
//!             self.conn.send(msg.upper())
//! ```
//!
//! `cargo run --release --example upper`

use procactor::{Connection, Pipe, Process};

/// The direct port: a process serving one end of a pipe until told to stop.
fn serve(conn: Connection<Option<String>>) -> usize {
    let mut served = 0;
    while let Ok(Some(msg)) = conn.recv() {
        if conn.send(Some(msg.to_uppercase())).is_err() {
            break;
        }
        served += 1;
    }
    served
}

/// The actor: the loop, the decoding and the stop message are the runtime's; what is left is the
/// behaviour. Any number of processes may call it, each gets its own answers.
struct Upper {
    served: usize,
}

#[procactor::actor]
impl Upper {
    fn init(_: ()) -> Self {
        Upper { served: 0 }
    }

    pub fn upper(&mut self, text: String) -> String {
        self.served += 1;
        text.to_uppercase()
    }

    /// Answers over a pipe the caller hands it (pipe ends travel in messages too).
    pub fn upper_to(&mut self, text: String, reply: Connection<Option<String>>) {
        self.served += 1;
        let _ = reply.send(Some(text.to_uppercase()));
    }

    pub fn served(&self) -> usize {
        self.served
    }
}

#[procactor::main]
fn main() -> procactor::Result<()> {
    let (here, there) = Pipe::<Option<String>>::duplex()?;
    let p = Process::new(serve, there).name("upper").start()?;
    here.send(Some("hello".into()))?;
    println!(
        "process over a pipe: hello -> {}",
        here.recv()?.unwrap_or_default()
    );
    here.send(None)?;
    println!("process served {} message(s)", p.join()?);

    let upper = procactor::spawn::<Upper>(())?;
    println!(
        "actor (pid {}): hello -> {}",
        upper.pid(),
        upper.upper("hello".into())?
    );
    let (mine, theirs) = Pipe::<Option<String>>::duplex()?;
    upper.cast().upper_to("hello again".into(), theirs)?;
    println!(
        "actor over a pipe: hello again -> {}",
        mine.recv()?.unwrap_or_default()
    );
    println!("actor served {} message(s)", upper.served()?);
    upper.stop()?;
    println!("actor: {}", upper.join()?);
    Ok(())
}
