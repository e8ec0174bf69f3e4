// A borrowed argument cannot travel: procactor's message says to take it by value. (`&str` and
// `&[u8]`, which serde can borrow from, get serde's "not general enough" instead: see
// target_borrowed_argument.rs.)
fn total(v: &Vec<u64>) -> u64 {
    v.iter().sum()
}

fn main() {
    procactor::init();
    let v = vec![1u64, 2];
    let _ = procactor::Process::new(total, &v);
}
