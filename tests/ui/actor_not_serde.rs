struct A;

struct Plain {
    x: u32,
}

#[procactor::actor]
impl A {
    fn init(_: ()) -> Self {
        A
    }

    pub fn take(&self, p: Plain) -> u32 {
        p.x
    }
}

fn main() {}
