// One mistake in the actor (`get` takes `self` by value), which the rest of the file uses as if
// it were right: the mistake is the only error (no "`Counter: Actor` is not satisfied", no "no
// method named `add`").
use procactor::ActorRef;

struct Counter {
    n: u64,
}

#[procactor::actor]
impl Counter {
    fn init(start: u64) -> Self {
        Counter { n: start }
    }

    /// Adds, returns the total.
    pub fn add(&mut self, k: u64) -> u64 {
        self.n += k;
        self.n
    }

    pub fn get(self) -> u64 {
        self.n
    }

    fn stopped(&mut self, _reason: &procactor::ExitReason) {}
}

fn total(c: &ActorRef<Counter>) -> procactor::Result<u64> {
    c.add(1)?;
    c.cast().add(2)?;
    c.get()
}

#[procactor::main]
fn main() {
    let c: ActorRef<Counter> = procactor::spawn::<Counter>(1).unwrap();
    let _: u64 = total(&c).unwrap();
    c.stop().unwrap();
}
