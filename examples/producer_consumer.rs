//! Seed port: producers and consumers on one queue.
//!
//! Python:
//! ```python
//! def producer(q, name):
//!     for i in range(5): q.put(f"{name}-{i}")
//! def consumer(q):
//!     while (item := q.get()) is not None: print("consumed", item)
//! q = Queue(); ...; for _ in consumers: q.put(None)
//! ```
//! Here `close()` replaces the `None` sentinels: consumers drain the queue, then `get` says
//! `Closed`.
use procactor::{Error, Process, Queue};

fn producer((q, name): (Queue<String>, String)) {
    for i in 0..5 {
        q.put(format!("{name}-{i}")).expect("put");
    }
}

fn consumer(q: Queue<String>) -> usize {
    let me = procactor::current_process();
    let mut n = 0;
    loop {
        match q.get() {
            Ok(item) => {
                println!("[{} pid {}] consumed {item}", me.name, me.pid);
                n += 1;
            }
            Err(Error::Closed) => return n,
            Err(e) => panic!("{e}"),
        }
    }
}

#[procactor::main]
fn main() -> Result<(), Error> {
    let q = Queue::bounded(4)?; // producers wait while 4 items are queued
    let producers = ["alpha", "beta", "gamma"]
        .into_iter()
        .map(|name| Process::new(producer, (q.clone(), name.to_string())).start())
        .collect::<Result<Vec<_>, _>>()?;
    let consumers = (0..2)
        .map(|i| {
            Process::new(consumer, q.clone())
                .name(format!("consumer-{i}"))
                .start()
        })
        .collect::<Result<Vec<_>, _>>()?;
    for p in producers {
        p.join()?;
    }
    q.close();
    let counts = consumers
        .iter()
        .map(|c| c.join())
        .collect::<Result<Vec<_>, _>>()?;
    println!(
        "consumed per consumer: {counts:?} (total {})",
        counts.iter().sum::<usize>()
    );
    assert_eq!(counts.iter().sum::<usize>(), 15);
    Ok(())
}
