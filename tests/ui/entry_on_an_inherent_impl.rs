// `#[entry]` registers a function or an `impl Actor for ...`; an inherent block is refused with
// what to write instead, and so is a generic actor.
struct Tally;

#[procactor::entry]
impl Tally {
    fn get(&self) -> u32 {
        1
    }
}

struct Wrapper<T>(T);

#[procactor::entry]
impl<T: 'static> procactor::Actor for Wrapper<T> {
    type Args = ();
    type Msg = ();
    type Reply = ();
    fn init(_: (), _: &mut procactor::Context<Self>) -> Result<Self, procactor::actor::InitError> {
        Err("never".into())
    }
    fn handle(&mut self, _: (), _: &mut procactor::Context<Self>) {}
}

fn main() {
    let _ = Tally.get();
}
