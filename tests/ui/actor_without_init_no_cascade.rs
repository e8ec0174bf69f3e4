// No `init`, and the actor is spawned and called elsewhere: the missing `init` is the only error.
struct Greeter;

#[procactor::actor]
impl Greeter {
    pub fn greet(&self, name: String) -> String {
        format!("hello {name}")
    }
}

#[procactor::main]
fn main() {
    let g = procactor::spawn::<Greeter>(()).unwrap();
    let _: String = g.greet("you".into()).unwrap();
    g.timeout(std::time::Duration::from_secs(1))
        .greet("again".into())
        .unwrap();
}
