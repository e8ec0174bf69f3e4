//! Functions and actors known by name: what crosses to another binary (and, next, another host)
//! is a name, never an address. Here a child that is a fresh run of this program (the `Spawn`
//! start method) starts an actor it only knows by its name, and calls a function by name.
//!
//! `cargo run --release --example by_name`

use procactor::actor::{self, ActorBuilder};
use procactor::{Process, StartMethod};

/// An inventory: stock per item.
struct Stock {
    items: std::collections::BTreeMap<String, u32>,
}

#[procactor::actor(name = "shop::stock")]
impl Stock {
    fn init(items: Vec<(String, u32)>) -> Self {
        Stock {
            items: items.into_iter().collect(),
        }
    }

    /// Takes `n` of `item` if there are enough; what is left.
    pub fn take(&mut self, item: String, n: u32) -> Option<u32> {
        let left = self.items.get_mut(&item)?;
        *left = left.checked_sub(n)?;
        Some(*left)
    }
}

#[procactor::entry(name = "shop::price")]
fn price(cents: u32) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

/// Runs in the child: looks both names up and uses them.
fn shop(items: Vec<(String, u32)>) -> Result<(Option<u32>, String), String> {
    let e = |e: procactor::Error| e.to_string();
    let stock = actor::spawn_named::<Stock>("shop::stock", items).map_err(e)?;
    let left = stock.take("pear".into(), 2).map_err(e)?;
    stock.stop().map_err(e)?;
    stock.join().map_err(e)?;
    let price = procactor::entry::lookup::<fn(u32) -> String>("shop::price").map_err(e)?;
    Ok((left, price(250)))
}

fn main() -> procactor::Result<()> {
    procactor::init();
    let items = vec![("pear".to_string(), 5), ("fig".to_string(), 1)];

    // Here: by name, with options, checked against the type we expect.
    let stock = ActorBuilder::<Stock>::new(items.clone())
        .name("the-stock")
        .spawn_named("shop::stock")?;
    println!(
        "here:  {} pears left",
        stock.take("pear".into(), 1)?.unwrap_or(0)
    );
    stock.stop()?;
    stock.join()?;

    // In a fresh run of this binary: the child resolves the same names.
    let child = Process::new(shop, items)
        .start_method(StartMethod::Spawn)
        .start()?;
    let (left, price) = child.join()?.map_err(procactor::Error::NotFound)?;
    println!(
        "child: {} pears left, a pear costs {price}",
        left.unwrap_or(0)
    );
    assert_eq!((left, price.as_str()), (Some(3), "$2.50"));

    // A name is never taken for another type: refused before anything starts.
    let wrong = actor::spawn_named::<Stock>("shop::nothing", vec![]);
    println!("unknown name: {}", wrong.unwrap_err());
    Ok(())
}
