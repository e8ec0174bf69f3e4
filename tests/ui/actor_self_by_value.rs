struct A;

#[procactor::actor]
impl A {
    fn init(_: ()) -> Self {
        A
    }

    pub fn consume(self) -> u32 {
        1
    }
}

fn main() {}
