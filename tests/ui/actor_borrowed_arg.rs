struct A;

#[procactor::actor]
impl A {
    fn init(_: ()) -> Self {
        A
    }

    pub fn greet(&self, name: &str) -> String {
        name.to_string()
    }
}

fn main() {}
