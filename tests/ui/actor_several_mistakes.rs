// Every mistake of the block in one build, each on its own span.
struct A;

#[procactor::actor]
impl A {
    fn init(&self, _: ()) -> Self {
        A
    }

    pub fn stop(&mut self) {}

    pub async fn wait(&self) {}

    pub fn greet(&self, name: &str) -> String {
        name.to_string()
    }

    pub fn started(&mut self) {}
}

fn main() {}
