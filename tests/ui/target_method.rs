// A method needs its receiver: wrap it in a function of an owned argument.
struct Counter(u32);

impl Counter {
    fn get(&self) -> u32 {
        self.0
    }
}

fn main() {
    procactor::init();
    let ex = procactor::Executor::new(1).unwrap();
    let _ = ex.submit(Counter::get, Counter(1));
}
