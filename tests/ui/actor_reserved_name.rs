struct A;

#[procactor::actor]
impl A {
    fn init(_: ()) -> Self {
        A
    }

    pub fn stop(&mut self) {}
}

fn main() {}
