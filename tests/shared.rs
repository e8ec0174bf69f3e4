//! Values, arrays and raw shared memory across real processes.

mod common;

use std::time::Duration;

use common::{reaped, BOUND};
use procactor::{Array, Error, Process, RawArray, RawValue, SharedMemory, Value};

procactor::test_support!();

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Point {
    x: f64,
    y: f64,
}

fn double((v, a, p): (Value<i64>, Array<f64>, Value<Point>)) {
    *v.lock() *= 2;
    for x in a.lock().iter_mut() {
        *x *= 2.0;
    }
    let mut g = p.lock();
    g.x *= 2.0;
    g.y *= 2.0;
}

#[test]
fn value_and_array_are_doubled_by_a_child() {
    let v = Value::new(21i64).unwrap();
    let a = Array::from_slice(&[0.5, 1.0, 1.5]).unwrap();
    let p = Value::new(Point { x: 1.0, y: -2.0 }).unwrap();
    reaped(
        Process::new(double, (v.clone(), a.clone(), p.clone()))
            .start()
            .unwrap(),
    )
    .join_timeout(BOUND)
    .unwrap();
    assert_eq!(v.get(), 42);
    assert_eq!(a.to_vec(), [1.0, 2.0, 3.0]);
    assert_eq!(a.get(2), Some(3.0));
    assert_eq!(a.get(3), None);
    assert_eq!(p.get(), Point { x: 2.0, y: -4.0 });
}

fn locked_incr((v, n): (Value<u64>, u32)) {
    for _ in 0..n {
        *v.lock() += 1;
    }
}

fn racy_incr((v, n): (RawValue<u64>, u32)) {
    for _ in 0..n {
        v.set(v.get() + 1);
        // Widen the window between the read and the write, as real work would.
        std::hint::black_box(0);
    }
}

#[test]
fn lock_guards_read_modify_write_and_raw_values_race() {
    let v = Value::new(0u64).unwrap();
    let ps: Vec<_> = (0..2)
        .map(|_| {
            reaped(
                Process::new(locked_incr, (v.clone(), 20_000))
                    .start()
                    .unwrap(),
            )
        })
        .collect();
    for p in &ps {
        p.join_timeout(BOUND).unwrap();
    }
    assert_eq!(v.get(), 40_000);

    // Without a lock, updates are lost (given enough tries on 2+ CPUs): the point of Value.
    if procactor::cpu_count() > 1 {
        let lost = (0..5).any(|_| {
            let r = RawValue::new(0u64).unwrap();
            let ps: Vec<_> = (0..2)
                .map(|_| {
                    reaped(
                        Process::new(racy_incr, (r.clone(), 200_000))
                            .start()
                            .unwrap(),
                    )
                })
                .collect();
            for p in &ps {
                p.join_timeout(BOUND).unwrap();
            }
            r.get() < 400_000
        });
        assert!(lost, "two unlocked writers never lost an update");
    }
}

#[test]
fn raw_array_and_lock_timeouts() {
    let a = RawArray::new(4, 0u16).unwrap();
    a.set(3, 9);
    assert_eq!(a.to_vec(), [0, 0, 0, 9]);
    assert_eq!(a.get(4), None);
    assert_eq!(a.len(), 4);
    let empty = Array::<u8>::from_slice(&[]).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.to_vec(), Vec::<u8>::new());

    let v = Value::new(1u8).unwrap();
    let _g = v.lock();
    let other = v.clone();
    let asked = Duration::from_millis(100);
    let r = std::thread::spawn(move || other.lock_timeout(asked).map(|g| *g))
        .join()
        .unwrap();
    assert!(matches!(r, Err(Error::Timeout(_))));
}

fn write_named((name, text): (String, String)) {
    let shm = SharedMemory::open(&name).unwrap();
    shm.write(0, text.as_bytes()).unwrap();
}

fn write_anonymous(shm: SharedMemory) {
    shm.write(1, b"xyz").unwrap();
}

#[test]
fn shared_memory_named_and_anonymous() {
    let name = format!("procactor-test-{}", std::process::id());
    let shm = SharedMemory::create(&name, 32).unwrap();
    assert_eq!(shm.name(), Some(name.as_str()));
    assert!(matches!(
        SharedMemory::create(&name, 8),
        Err(Error::NameTaken(_))
    ));
    reaped(
        Process::new(write_named, (name.clone(), "attached".to_string()))
            .start()
            .unwrap(),
    )
    .join_timeout(BOUND)
    .unwrap();
    assert_eq!(&shm.to_vec()[..8], b"attached");
    assert!(matches!(shm.write(30, b"abc"), Err(Error::InvalidState(_))));
    let mut buf = [0u8; 3];
    assert!(shm.read(usize::MAX, &mut buf).is_err());
    // The last handle gone, the name is gone.
    drop(shm);
    assert!(SharedMemory::open(&name).is_err());

    let anon = SharedMemory::new(8).unwrap();
    assert_eq!(anon.name(), None);
    reaped(Process::new(write_anonymous, anon.clone()).start().unwrap())
        .join_timeout(BOUND)
        .unwrap();
    assert_eq!(anon.to_vec(), b"\0xyz\0\0\0\0");

    // unlink on request: attached handles keep working.
    let shm = SharedMemory::create(&name, 4).unwrap();
    shm.unlink().unwrap();
    assert!(SharedMemory::open(&name).is_err());
    shm.write(0, b"ok").unwrap();
    assert!(matches!(
        SharedMemory::create("a/b", 4),
        Err(Error::InvalidState(_))
    ));
}

type Handles = (
    procactor::Queue<u32>,
    procactor::Lock,
    Value<u64>,
    SharedMemory,
);

fn use_handles_from_a_pipe(conn: procactor::Connection<Handles>) {
    let (q, lock, v, shm) = conn.recv_timeout(BOUND).unwrap();
    let _g = lock.acquire().unwrap();
    *v.lock() += 1;
    shm.write(0, b"via pipe").unwrap();
    q.put(&7).unwrap();
}

#[test]
fn handles_travel_inside_messages() {
    let (here, there) = procactor::Pipe::<Handles>::duplex().unwrap();
    let p = reaped(
        Process::new(use_handles_from_a_pipe, there)
            .start()
            .unwrap(),
    );
    let q = procactor::Queue::new().unwrap();
    let lock = procactor::Lock::new().unwrap();
    let v = Value::new(41u64).unwrap();
    let shm = SharedMemory::new(8).unwrap();
    here.send((q.clone(), lock.clone(), v.clone(), shm.clone()))
        .unwrap();
    assert_eq!(q.get_timeout(BOUND).unwrap(), 7);
    p.join_timeout(BOUND).unwrap();
    assert_eq!(v.get(), 42);
    assert_eq!(shm.to_vec(), b"via pipe");
    assert!(!lock.is_locked());
}

/// In a child of its own: no other test opens descriptors meanwhile.
fn open_and_drop_handles(_: ()) -> (usize, usize) {
    let before = common::open_fds();
    for _ in 0..50 {
        let q = procactor::Queue::<u32>::new().unwrap();
        q.put(&1).unwrap();
        let _l = procactor::Lock::new().unwrap();
        let _c = procactor::Condition::new().unwrap();
        let _b = procactor::Barrier::new(2).unwrap();
        let _v = Value::new(0u8).unwrap();
        let _a = Array::new(1000, 0u64).unwrap();
        let _s = SharedMemory::new(10).unwrap();
    }
    (before, common::open_fds())
}

#[test]
fn dropping_handles_closes_their_descriptors_and_mappings() {
    let p = reaped(Process::new(open_and_drop_handles, ()).start().unwrap());
    let (before, after) = p.join_timeout(BOUND).unwrap();
    assert_eq!(before, after);
}
