//! Ten processes append to one shared list in a manager, which the parent prints at the end
//! (Python's `manager.list()` demo).
//!
//! Run: `cargo run --example manager_seeds`

use procactor::{manager::ListProxy, Manager, Process};

fn plant(seeds: ListProxy<String>) {
    let me = procactor::current_process();
    seeds
        .append(format!("seed from {} (pid {})", me.name, me.pid))
        .expect("append");
}

fn main() -> procactor::Result<()> {
    procactor::init();
    let m = Manager::start()?;
    let seeds = m.list::<String>()?;
    let gardeners = (0..10)
        .map(|i| {
            Process::new(plant, seeds.clone())
                .name(format!("gardener-{i}"))
                .start()
        })
        .collect::<procactor::Result<Vec<_>>>()?;
    for g in gardeners {
        g.join()?;
    }
    let mut all = seeds.snapshot()?;
    all.sort();
    println!("{} seeds in the manager (pid {}):", all.len(), m.pid());
    for s in &all {
        println!("  {s}");
    }
    assert_eq!(all.len(), 10);
    Ok(())
}
