// `#[actor]` takes only `name = "..."`: anything else is one error on it, and the actor is still
// usable (no cascade).
struct Tally;

#[procactor::actor(nmae = "tally")]
impl Tally {
    fn init(_: ()) -> Self {
        Tally
    }
    pub fn get(&self) -> u32 {
        1
    }
}

struct Empty;

#[procactor::actor(name = "")]
impl Empty {
    fn init(_: ()) -> Self {
        Empty
    }
    pub fn get(&self) -> u32 {
        2
    }
}

fn main() {
    let _ = procactor::spawn::<Tally>(());
}
