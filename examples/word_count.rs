//! A word count: worker processes of a Pool fill one shared dict with `upsert`, which runs the
//! increment inside the manager. The racy Python way (`d[w] = d.get(w, 0) + 1` from many
//! processes) is run too, to show the updates it loses.
//!
//! Run: `cargo run --release --example word_count`

use procactor::{manager::DictProxy, Manager, Pool};

const TEXT: &str = "the quick brown fox jumps over the lazy dog the dog barks \
                    and the fox runs the end";

fn count_atomic((d, line): (DictProxy<String, u64>, String)) -> usize {
    for w in line.split_whitespace() {
        d.upsert(&w.to_string(), 0, |n| *n += 1).expect("upsert");
    }
    line.split_whitespace().count()
}

fn count_racy((d, line): (DictProxy<String, u64>, String)) -> usize {
    for w in line.split_whitespace() {
        let k = w.to_string();
        let n = d.get(&k).expect("get").unwrap_or(0); // read ...
        d.insert(k, n + 1).expect("insert"); //          ... then write: another process may have written between
    }
    line.split_whitespace().count()
}

fn main() -> procactor::Result<()> {
    procactor::init();
    let m = Manager::start()?;
    let pool = Pool::new(4)?;
    let lines = vec![TEXT.to_string(); 200];

    let atomic = m.dict::<String, u64>()?;
    let words: usize = pool
        .map(
            count_atomic,
            lines.iter().map(|l| (atomic.clone(), l.clone())),
        )?
        .iter()
        .sum();
    let racy = m.dict::<String, u64>()?;
    pool.map(count_racy, lines.iter().map(|l| (racy.clone(), l.clone())))?;

    let mut counts: Vec<(String, u64)> = atomic.items()?;
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    println!("{words} words counted by 4 worker processes into one manager dict:");
    for (w, n) in counts.iter().take(5) {
        println!("  {w:>6}: {n}");
    }
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    let racy_total: u64 = racy.values()?.iter().sum();
    println!("with upsert (atomic in the manager): {total} of {words}");
    println!("with get + insert (Python's d[k] += 1): {racy_total} of {words}");
    assert_eq!(total as usize, words);
    Ok(())
}
