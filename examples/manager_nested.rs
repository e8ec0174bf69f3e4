//! Nested proxies: a dict whose values are list proxies. Children write through the inner
//! lists they get out of the dict; the parent sees every write through its own proxies.
//!
//! Run: `cargo run --example manager_nested`

use procactor::{manager::DictProxy, manager::ListProxy, Manager, Process};

fn enrol((classes, class, student): (DictProxy<String, ListProxy<String>>, String, String)) {
    let roster = classes.get(&class).expect("get").expect("the class exists");
    roster.append(student).expect("append");
}

fn main() -> procactor::Result<()> {
    procactor::init();
    let m = Manager::start()?;
    let classes = m.dict::<String, ListProxy<String>>()?;
    for c in ["maths", "music"] {
        classes.insert(c.to_string(), m.list()?)?;
    }
    let students = [
        ("maths", "ada"),
        ("music", "clara"),
        ("maths", "emmy"),
        ("music", "ludwig"),
    ];
    let ps = students
        .iter()
        .map(|(c, s)| Process::new(enrol, (classes.clone(), c.to_string(), s.to_string())).start())
        .collect::<procactor::Result<Vec<_>>>()?;
    for p in ps {
        p.join()?;
    }
    let mut names = classes.keys()?;
    names.sort();
    for c in names {
        let roster = classes.get(&c)?.expect("class");
        let mut who = roster.snapshot()?;
        who.sort();
        println!("{c}: {}", who.join(", "));
        assert_eq!(who.len(), 2);
    }
    println!(
        "objects in the manager: {} (one dict, two lists)",
        m.object_count()?
    );
    drop(classes);
    println!("after dropping the dict: {}", m.object_count()?);
    Ok(())
}
