//! Seed port: a `Value` and an `Array` in shared memory, changed by a child.
//!
//! Python:
//! ```python
//! def f(n, a):
//!     n.value *= 2
//!     for i in range(len(a)): a[i] *= 2
//! num = Value('d', 3.25); arr = Array('i', range(10))
//! p = Process(target=f, args=(num, arr)); p.start(); p.join()
//! print(num.value, arr[:])
//! ```
use procactor::{Array, Error, Process, Value};

fn double((n, a): (Value<f64>, Array<i32>)) {
    *n.lock() *= 2.0;
    for x in a.lock().iter_mut() {
        *x *= 2;
    }
}

#[procactor::main]
fn main() -> Result<(), Error> {
    let num = Value::new(3.25f64)?;
    let arr = Array::from_slice(&(0..10).collect::<Vec<i32>>())?;
    Process::new(double, (num.clone(), arr.clone()))
        .start()?
        .join()?;
    println!("{} {:?}", num.get(), arr.to_vec());
    assert_eq!(num.get(), 6.5);
    assert_eq!(arr.to_vec(), (0..10).map(|i| i * 2).collect::<Vec<_>>());
    Ok(())
}
