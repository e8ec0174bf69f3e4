// A program with an actor: it runs (trybuild runs passing cases), so the generated code works.
use procactor::ActorRef;

struct Tally {
    n: i64,
}

#[procactor::actor]
impl Tally {
    fn init(start: i64) -> Self {
        Tally { n: start }
    }

    /// Adds, returns the total.
    pub fn add(&mut self, mut k: i64, _unused: (u8, u8)) -> i64 {
        k += 0;
        self.n += k;
        self.n
    }

    pub fn total(&self) -> i64 {
        self.n
    }

    fn helper(&self) -> i64 {
        self.n
    }

    fn stopped(&mut self, _reason: &procactor::ExitReason) {
        let _ = self.helper();
    }
}

#[procactor::main]
fn main() {
    let t: ActorRef<Tally> = procactor::spawn::<Tally>(1).unwrap();
    assert_eq!(t.add(2, (0, 0)).unwrap(), 3);
    t.cast().add(1, (0, 0)).unwrap();
    assert_eq!(t.total().unwrap(), 4);
    t.stop().unwrap();
    t.join().unwrap();
}
