//! Values, arrays and raw shared memory across real processes.

mod common;

use std::time::Duration;

use common::{reaped, BOUND};
use procactor::{shared::RawArray, shared::RawValue, Array, Error, Process, SharedMemory, Value};

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
    // Size 0 is refused (as CPython does), and creates nothing.
    assert!(SharedMemory::create(&name, 0).is_err());
    assert!(SharedMemory::open(&name).is_err());
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
    q.put(7).unwrap();
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
        q.put(1).unwrap();
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

// ---- Nobody can resize shared memory under its other users (and nothing unsealed gets in) ----

/// 16 bytes no other object in this process holds: the pid, a counter and the time.
fn marker() -> [u8; 16] {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut m = [0u8; 16];
    m[..4].copy_from_slice(&std::process::id().to_le_bytes());
    m[4..8].copy_from_slice(&N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    m[8..].copy_from_slice(&t.to_le_bytes());
    m
}

/// The memory object of this process that holds `marker`, opened through /proc/self/fd as any
/// code of the process could (the same inode as the handle's descriptor).
fn memory_holding(marker: &[u8]) -> std::fs::File {
    use std::io::Read;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if !link.to_string_lossy().contains("memfd:procactor") {
            continue;
        }
        let Ok(mut file) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(entry.path())
        else {
            continue;
        };
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_ok() && bytes.windows(marker.len()).any(|w| w == marker)
        {
            use std::io::Seek;
            file.rewind().unwrap();
            return file;
        }
    }
    panic!("no memory object holds the marker")
}

/// The errno of `ftruncate(file, len)` (0: it succeeded).
fn resize(file: &std::fs::File, len: u64) -> i32 {
    match rustix::fs::ftruncate(file, len) {
        Ok(()) => 0,
        Err(e) => e.raw_os_error(),
    }
}

/// One object of each kind, each holding its own marker (see `memory_holding`).
#[derive(serde::Serialize, serde::Deserialize)]
struct Objects {
    queue: procactor::Queue<Vec<u8>>,
    value: Value<[u8; 16]>,
    array: Array<u8>,
    shm: SharedMemory,
    markers: [[u8; 16]; 4],
}

impl Objects {
    fn new() -> Objects {
        let markers = [marker(), marker(), marker(), marker()];
        let queue = procactor::Queue::builder()
            .capacity_bytes(4096)
            .build()
            .unwrap();
        queue.put(markers[0].to_vec()).unwrap();
        let shm = SharedMemory::new(64).unwrap();
        shm.write(8, &markers[3]).unwrap();
        Objects {
            queue,
            value: Value::new(markers[1]).unwrap(),
            array: Array::from_slice(&markers[2]).unwrap(),
            shm,
            markers,
        }
    }

    /// Uses every object; what each gave back.
    fn exercise(&self) -> (Vec<u8>, [u8; 16], Vec<u8>, Vec<u8>) {
        self.queue.put(b"after".to_vec()).unwrap();
        let queued = self.queue.get_timeout(BOUND).unwrap();
        assert_eq!(self.queue.get_timeout(BOUND).unwrap(), b"after");
        self.queue.put(queued.clone()).unwrap(); // for the next user
        self.array.set(0, self.array.get(0).unwrap());
        self.shm.write(0, b"written").unwrap();
        (
            queued,
            self.value.get(),
            self.array.to_vec(),
            self.shm.to_vec(),
        )
    }

    fn check(&self, got: &(Vec<u8>, [u8; 16], Vec<u8>, Vec<u8>)) {
        assert_eq!(got.0, self.markers[0], "queue");
        assert_eq!(got.1, self.markers[1], "value");
        assert_eq!(got.2, self.markers[2], "array");
        assert_eq!(&got.3[..7], b"written", "shared memory");
        assert_eq!(got.3[8..24], self.markers[3], "shared memory");
    }
}

/// Grows, then shrinks, the memory of each object: the errno of each attempt (0: done). The
/// objects are leaked, not dropped: if a resize went through, touching them would fault.
fn resize_every_object(objects: Objects) -> Vec<(i32, i32)> {
    let files: Vec<_> = objects.markers.iter().map(|m| memory_holding(m)).collect();
    std::mem::forget(objects);
    files
        .iter()
        .map(|f| {
            let len = f.metadata().unwrap().len();
            (resize(f, len + 4096), resize(f, 0))
        })
        .collect()
}

/// Maps the objects, says so, waits for the go, then uses every one of them.
fn use_after_the_go(
    (objects, mapped, go): (Objects, procactor::Event, procactor::Event),
) -> (Vec<u8>, [u8; 16], Vec<u8>, Vec<u8>) {
    mapped.set();
    go.wait_timeout(BOUND).unwrap();
    objects.exercise()
}

#[test]
fn nobody_can_resize_a_queue_value_array_or_shared_memory_under_its_users() {
    let objects = Objects::new();
    // This process's own descriptors of the four objects, and their sizes.
    let files: Vec<_> = objects.markers.iter().map(|m| memory_holding(m)).collect();
    let sizes: Vec<u64> = files.iter().map(|f| f.metadata().unwrap().len()).collect();

    // A user that has mapped every object before anyone tries to resize it.
    let (mapped, go) = (
        procactor::Event::new().unwrap(),
        procactor::Event::new().unwrap(),
    );
    let user = reaped(
        Process::new(
            use_after_the_go,
            (clone_objects(&objects), mapped.clone(), go.clone()),
        )
        .start()
        .unwrap(),
    );
    mapped.wait_timeout(BOUND).unwrap();
    let tried = reaped(
        Process::new(resize_every_object, clone_objects(&objects))
            .start()
            .unwrap(),
    )
    .join_timeout(BOUND);
    go.set();
    let used = user.join_timeout(BOUND);
    // Before asserting: a resize that went through is undone, or this process would fault on
    // its own mappings (unwinding drops them, and a queue's drop reads its lock).
    let mut resized_here = Vec::new();
    for (f, &len) in files.iter().zip(&sizes) {
        if f.metadata().unwrap().len() != len {
            resized_here.push(len);
            rustix::fs::ftruncate(f, len).unwrap();
        }
    }
    // The user that had them mapped was not killed (SIGBUS) and saw every object intact.
    let used = used.unwrap_or_else(|e| panic!("the other user of the objects: {e}"));
    assert_eq!(
        tried.unwrap(),
        vec![(libc::EPERM, libc::EPERM); 4],
        "a child resized (grow, shrink) the queue, value, array or shared memory"
    );
    assert!(resized_here.is_empty(), "sizes changed: {resized_here:?}");
    objects.check(&used);
    // This process cannot resize them either, and still uses them.
    for f in &files {
        let len = f.metadata().unwrap().len();
        assert_eq!(
            (resize(f, len * 2), resize(f, 0)),
            (libc::EPERM, libc::EPERM)
        );
        assert_eq!(f.metadata().unwrap().len(), len);
    }
    objects.check(&objects.exercise());
}

fn clone_objects(o: &Objects) -> Objects {
    Objects {
        queue: o.queue.clone(),
        value: o.value.clone(),
        array: o.array.clone(),
        shm: o.shm.clone(),
        markers: o.markers,
    }
}

/// What a peer that does not play by the rules can put on a pipe: a frame that claims to carry
/// a `T`, with `payload` (the descriptor indexes, postcard) and `fds` attached.
fn send_crafted<T>(
    conn: &procactor::Connection<T>,
    payload: &[u8],
    fds: &[std::os::fd::BorrowedFd],
) {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::mem::MaybeUninit;
    // A frame: kind 1 (a value), the FNV-1a of the type's name, the payload.
    let fingerprint = std::any::type_name::<T>()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
    let mut frame = vec![1u8];
    frame.extend_from_slice(&fingerprint.to_le_bytes());
    frame.extend_from_slice(payload);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    sendmsg(
        conn,
        &[std::io::IoSlice::new(&frame)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .unwrap();
}

/// A memfd holding `bytes`, sealed with `seals` (none: the memfd can be resized by anyone).
fn crafted_memfd(bytes: &[u8], seals: rustix::fs::SealFlags) -> std::os::fd::OwnedFd {
    use rustix::fs::{memfd_create, MemfdFlags};
    let fd = memfd_create("crafted", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    rustix::io::write(&fd, bytes).unwrap();
    if !seals.is_empty() {
        rustix::fs::fcntl_add_seals(&fd, seals).unwrap();
    }
    fd
}

/// Receives until the pipe is closed: for each message, what the handle read or why it was
/// refused.
fn receive_values(conn: procactor::Connection<Value<u64>>) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        match conn.recv_timeout(BOUND) {
            Ok(v) => seen.push(format!("accepted {}", v.get())),
            Err(Error::Disconnected) => return seen,
            Err(e) => seen.push(e.to_string()),
        }
    }
}

fn receive_shared_memory(conn: procactor::Connection<SharedMemory>) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        match conn.recv_timeout(BOUND) {
            Ok(s) => seen.push(format!("accepted {:?}", s.to_vec())),
            Err(Error::Disconnected) => return seen,
            Err(e) => seen.push(e.to_string()),
        }
    }
}

#[test]
fn crafted_unsealed_or_short_memory_is_refused_where_a_handle_is_expected() {
    use rustix::fs::SealFlags;
    use std::io::Read;
    use std::os::fd::AsFd;
    let fixed = SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL;

    // The bytes of a genuine Value<u64>: a crafted copy looks right in every other respect.
    let genuine = Value::new(u64::from_le_bytes(marker()[8..].try_into().unwrap())).unwrap();
    let mut bytes = Vec::new();
    memory_holding(&genuine.get().to_le_bytes())
        .read_to_end(&mut bytes)
        .unwrap();

    let (here, there) = procactor::Pipe::<Value<u64>>::duplex().unwrap();
    let p = reaped(Process::new(receive_values, there).start().unwrap());
    let unsealed = crafted_memfd(&bytes, SealFlags::empty());
    let half_sealed = crafted_memfd(&bytes, SealFlags::SHRINK | SealFlags::GROW);
    let short = crafted_memfd(&bytes[..bytes.len() - 8], fixed);
    let tiny = crafted_memfd(&[], fixed);
    let (pipe_r, _pipe_w) = rustix::pipe::pipe().unwrap();
    for fd in [&unsealed, &half_sealed, &short, &tiny, &pipe_r] {
        send_crafted(&here, &[0], &[fd.as_fd()]);
    }
    here.send(genuine.clone()).unwrap();
    drop(here);
    let seen = p.join_timeout(BOUND).unwrap();
    assert_eq!(seen.len(), 6, "{seen:#?}");
    // Refused, each, with its reason.
    for refusal in &seen[..5] {
        assert!(refusal.starts_with("could not decode"), "{seen:#?}");
    }
    for i in [0, 1, 4] {
        assert!(seen[i].contains("not sealed against resizing"), "{seen:#?}");
    }
    assert!(seen[2].contains("wrong size"), "{seen:#?}");
    assert!(seen[3].contains("of 0 bytes"), "{seen:#?}");
    assert_eq!(seen[5], format!("accepted {}", genuine.get()));

    // A SharedMemory: an unsealed copy, anonymous or claiming the name of a block it is not.
    let name = format!("procactor-crafted-{}", std::process::id());
    let named = SharedMemory::create(&name, 16).unwrap();
    named.write(0, b"the real one").unwrap();
    let anon = SharedMemory::new(16).unwrap();
    let mk = marker();
    anon.write(0, &mk).unwrap();
    let copy = {
        let mut f = memory_holding(&mk);
        let mut b = Vec::new();
        f.read_to_end(&mut b).unwrap();
        b
    };
    let (here, there) = procactor::Pipe::<SharedMemory>::duplex().unwrap();
    let p = reaped(Process::new(receive_shared_memory, there).start().unwrap());
    let unsealed = crafted_memfd(&copy, SealFlags::empty());
    send_crafted(&here, &[0, 0], &[unsealed.as_fd()]);
    let mut claims_name = vec![0u8, 1, name.len() as u8 + 1, b'/'];
    claims_name.extend_from_slice(name.as_bytes());
    send_crafted(&here, &claims_name, &[unsealed.as_fd()]);
    here.send(anon.clone()).unwrap();
    here.send(named.clone()).unwrap();
    drop(here);
    let seen = p.join_timeout(BOUND).unwrap();
    assert_eq!(seen.len(), 4, "{seen:#?}");
    assert!(seen[0].starts_with("could not decode"), "{seen:#?}");
    assert!(seen[1].starts_with("could not decode"), "{seen:#?}");
    assert!(seen[2].starts_with("accepted"), "{seen:#?}");
    assert!(seen[3].starts_with("accepted [116, 104, 101"), "{seen:#?}");
    named.unlink().unwrap();
}

/// Makes one object of every kind, then tries to resize every procactor memory object in its
/// descriptor table: (memfd name, errno of growing, errno of shrinking). A resize that went
/// through is undone at once (so that nothing faults here).
fn resize_one_of_each(_: ()) -> Vec<(String, i32, i32)> {
    let q = procactor::Queue::<u8>::new().unwrap();
    q.put(1).unwrap();
    let objects = (
        q,
        procactor::Lock::new().unwrap(),
        procactor::RLock::new().unwrap(),
        procactor::Semaphore::new(1).unwrap(),
        procactor::sync::BoundedSemaphore::new(1).unwrap(),
        procactor::Event::new().unwrap(),
        procactor::Condition::new().unwrap(),
        procactor::Barrier::new(2).unwrap(),
        Value::new(1u8).unwrap(),
        Array::new(3, 1u16).unwrap(),
        RawValue::new(1u32).unwrap(),
        RawArray::new(3, 1u64).unwrap(),
        SharedMemory::new(100).unwrap(),
        procactor::Pool::new(1).unwrap(),
    );
    let mut tried = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let link = std::fs::read_link(entry.path()).unwrap_or_default();
        let link = link.to_string_lossy();
        let Some(name) = link.strip_prefix("/memfd:procactor-") else {
            continue;
        };
        let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(entry.path())
        else {
            continue;
        };
        let len = f.metadata().unwrap().len();
        let grow = resize(&f, len + 4096);
        let shrink = resize(&f, len / 2);
        if grow == 0 || shrink == 0 {
            rustix::fs::ftruncate(&f, len).unwrap();
        }
        tried.push((
            name.trim_end_matches(" (deleted)").to_string(),
            grow,
            shrink,
        ));
    }
    drop(objects);
    tried
}

#[test]
fn every_memory_object_is_sealed_against_resizing() {
    let p = reaped(Process::new(resize_one_of_each, ()).start().unwrap());
    let tried = p.join_timeout(BOUND).unwrap();
    let mut names: Vec<&str> = tried.iter().map(|(n, ..)| n.as_str()).collect();
    names.sort();
    names.dedup();
    for kind in [
        "queue",
        "lock",
        "rlock",
        "semaphore",
        "event",
        "condition",
        "barrier",
        "value",
        "array",
        "rawvalue",
        "rawarray",
        "shm",
        "pool-board",
    ] {
        assert!(names.contains(&kind), "no {kind} among {names:?}");
    }
    for (name, grow, shrink) in &tried {
        assert_eq!(
            (*grow, *shrink),
            (libc::EPERM, libc::EPERM),
            "{name} could be resized"
        );
    }
}

/// Creates named blocks under two umasks; their modes. (In a child: the umask is per process.)
fn modes_under_umasks(name: String) -> Vec<u32> {
    use std::os::unix::fs::PermissionsExt;
    [0o000, 0o277]
        .into_iter()
        .map(|mask| {
            rustix::process::umask(rustix::fs::Mode::from_bits_truncate(mask));
            let shm = SharedMemory::create(&name, 8).unwrap();
            let meta = std::fs::metadata(format!("/dev/shm/{name}")).unwrap();
            drop(shm); // unlinks
            meta.permissions().mode() & 0o777
        })
        .collect()
}

/// Removes a named block when dropped.
struct UnlinkOnDrop<'a>(&'a str);

impl Drop for UnlinkOnDrop<'_> {
    fn drop(&mut self) {
        let _ = rustix::shm::unlink(format!("/{}", self.0).as_str());
    }
}

#[test]
fn named_shared_memory_is_private_and_its_size_checked_on_open() {
    let name = format!("procactor-private-{}", std::process::id());
    let p = reaped(
        Process::new(modes_under_umasks, name.clone())
            .start()
            .unwrap(),
    );
    assert_eq!(p.join_timeout(BOUND).unwrap(), [0o600, 0o600]);

    // A named block shrunk below what its header says is refused on open, not mapped.
    let shm = SharedMemory::create(&name, 4096).unwrap();
    // Truncating the file below also zeroes the count of attached handles kept in its header,
    // so dropping `shm` cannot know it was the last one: the name is removed here, also when an
    // assertion fails.
    let _unlink = UnlinkOnDrop(&name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/{name}"))
        .unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len - 1).unwrap();
    let err = SharedMemory::open(&name).unwrap_err();
    assert!(
        matches!(&err, Error::Decode { reason, .. } if reason.contains("wrong size")),
        "{err}"
    );
    // Too small for a header: refused too.
    file.set_len(10).unwrap();
    assert!(matches!(
        SharedMemory::open(&name),
        Err(Error::Decode { .. })
    ));
    file.set_len(len).unwrap();
    drop(shm);
}
