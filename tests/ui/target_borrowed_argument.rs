// A target's argument travels by value: a function of a borrowed argument cannot be a target.
fn length(s: &str) -> usize {
    s.len()
}

fn main() {
    procactor::init();
    let pool = procactor::Pool::new(1).unwrap();
    let _ = pool.map(length, ["a", "bb"]);
}
