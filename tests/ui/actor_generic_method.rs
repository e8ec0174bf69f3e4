struct A;

#[procactor::actor]
impl A {
    fn init(_: ()) -> Self {
        A
    }

    pub fn show<T: std::fmt::Debug>(&self, t: T) -> String {
        format!("{t:?}")
    }
}

fn main() {}
