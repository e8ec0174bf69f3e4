//! Functions registered by name (`#[procactor::entry]`): found by name and type in this binary
//! and in a child that is a fresh run of it, refused under another type or an unknown name, and
//! sent to a Manager by name (the form that works from another binary or host).

mod common;

use common::bounded;
use procactor::{Error, Manager, Process};

procactor::test_support!();

#[procactor::entry(name = "tests::square")]
fn square(x: u64) -> u64 {
    x * x
}

#[procactor::entry]
fn add_ten(n: &mut u64) {
    *n += 10;
}

/// Runs in a child: resolves `name` and calls it.
fn call_by_name((name, x): (String, u64)) -> Result<u64, String> {
    let f = procactor::entry::lookup::<fn(u64) -> u64>(&name).map_err(|e| e.to_string())?;
    Ok(f(x))
}

#[test]
fn a_name_resolves_to_its_function_here_and_in_a_spawned_child() {
    bounded(|| {
        let f = procactor::entry::lookup::<fn(u64) -> u64>("tests::square").unwrap();
        assert_eq!(f(9), 81);
        assert_eq!(
            procactor::entry::name_of(square as fn(u64) -> u64),
            Some("tests::square")
        );
        let p = Process::new(call_by_name, ("tests::square".to_string(), 12))
            .start()
            .unwrap();
        assert_eq!(p.join().unwrap(), Ok(144));
    });
}

#[test]
fn the_default_name_is_the_function_path() {
    let name = concat!(module_path!(), "::add_ten");
    assert_eq!(
        procactor::entry::name_of(add_ten as fn(&mut u64)),
        Some(name)
    );
    let f = procactor::entry::lookup::<fn(&mut u64)>(name).unwrap();
    let mut n = 1;
    f(&mut n);
    assert_eq!(n, 11);
}

#[test]
fn another_type_or_an_unknown_name_is_refused_never_called() {
    bounded(|| {
        let err = procactor::entry::lookup::<fn(u32) -> u32>("tests::square").unwrap_err();
        assert!(
            matches!(err, Error::NotFound(ref m) if m.contains("fn(u64) -> u64")),
            "{err}"
        );
        assert!(procactor::entry::lookup::<fn(u64) -> u64>("tests::cube").is_err());
        let p = Process::new(call_by_name, ("tests::cube".to_string(), 2))
            .start()
            .unwrap();
        let refused = p.join().unwrap().unwrap_err();
        assert!(refused.contains("tests::cube"), "{refused}");
    });
}

#[test]
fn a_manager_update_with_a_registered_function_goes_by_name() {
    bounded(|| {
        let m = Manager::start().unwrap();
        let d = m.dict::<String, u64>().unwrap();
        d.insert("a".into(), 5).unwrap();
        // Registered: the manager resolves it by name, as it would for a proxy on another host.
        assert!(procactor::entry::name_of(add_ten as fn(&mut u64)).is_some());
        assert_eq!(d.update(&"a".into(), add_ten).unwrap(), 15);
        assert_eq!(d.get(&"a".into()).unwrap(), Some(15));
        let v = m.value(1u64).unwrap();
        assert_eq!(v.update(add_ten).unwrap(), 11);
        assert_eq!(v.get().unwrap(), 11);
        m.shutdown().unwrap();
    });
}
