struct A;

#[procactor::actor]
impl A {
    pub fn ping(&self) {}
}

fn main() {}
