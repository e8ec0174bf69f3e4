//! A child's `log` records, forwarded to the parent's logger and tagged with the child's name and
//! pid.
//!
//! All children write to one SEQPACKET socket (records are atomic, so writers never interleave);
//! a thread in the parent reads it and calls the parent's logger. `join` drains what is left
//! before it returns, so every record a child logged is delivered before its `join` does.
//!
//! Children started with `Fork` inherit a copy of the parent's logger object instead (the `log`
//! crate's logger can be set only once per process image): their records go wherever the
//! parent's logger writes, untagged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::pipe::{Connection, Pipe};

/// One log record, as it crosses the process boundary.
#[derive(Serialize, Deserialize)]
pub(crate) struct Record {
    level: usize,
    target: String,
    module_path: Option<String>,
    file: Option<String>,
    line: Option<u32>,
    message: String,
    name: String,
    pid: u32,
}

/// What a child gets to log with: the shared socket and the parent's level filter.
#[derive(Serialize, Deserialize)]
pub(crate) struct Sink {
    conn: Connection<Record>,
    max_level: usize,
}

struct Collector {
    read: Connection<Record>,
    write: Connection<Record>,
    // Taken by whoever is emitting records, so that the order of each child's records is kept.
    emitting: Mutex<()>,
}

procactor_os::per_process! {
    /// Per process: a `Fork` child inherits the collector but not its thread, and makes its own.
    static COLLECTOR: Option<Arc<Collector>> = || None;
}

fn collector() -> Option<Arc<Collector>> {
    let mut slot = COLLECTOR.lock();
    if let Some(c) = slot.as_ref() {
        return Some(c.clone());
    }
    let (read, write) = Pipe::<Record>::simplex().ok()?;
    let c = Arc::new(Collector {
        read,
        write,
        emitting: Mutex::new(()),
    });
    let for_thread = c.clone();
    crate::per_process::spawn_thread("procactor-logs", move || collect(&for_thread)).ok()?;
    *slot = Some(c.clone());
    Some(c)
}

/// A sink for a new child, or `None` when the parent logs nothing.
pub(crate) fn sink() -> Option<Sink> {
    let max_level = log::max_level();
    if max_level == log::LevelFilter::Off {
        return None;
    }
    let c = collector()?;
    let conn = c.write.try_clone().ok()?;
    Some(Sink {
        conn,
        max_level: max_level as usize,
    })
}

/// Threads the runtime itself runs in this process (for the fork-safety warning).
pub(crate) fn service_threads() -> usize {
    usize::from(COLLECTOR.lock().is_some()) + usize::from(crate::closer::running())
}

fn collect(c: &Collector) {
    while c.read.poll(Duration::from_secs(3600)).is_ok() {
        drain_from(c);
    }
}

/// Emits every record already received (called by `join`, so a child's records come before its
/// result).
pub(crate) fn drain() {
    let c = COLLECTOR.lock().clone();
    if let Some(c) = c {
        drain_from(&c);
    }
}

fn drain_from(c: &Collector) {
    let _emitting = c.emitting.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        match c.read.try_recv() {
            Ok(r) => emit(&r),
            // A record that does not decode is skipped: the ones behind it still count.
            Err(crate::Error::Decode { .. }) => continue,
            Err(_) => return,
        }
    }
}

/// Levels travel as their numbers (`Level as usize`: Error = 1 ... Trace = 5).
fn level_of(n: usize) -> log::Level {
    log::Level::iter()
        .nth(n.saturating_sub(1))
        .unwrap_or(log::Level::Trace)
}

fn emit(r: &Record) {
    log::logger().log(
        &log::Record::builder()
            .level(level_of(r.level))
            .target(&r.target)
            .module_path(r.module_path.as_deref())
            .file(r.file.as_deref())
            .line(r.line)
            .args(format_args!("[{} pid {}] {}", r.name, r.pid, r.message))
            .build(),
    );
}

procactor_os::per_process! {
    /// Where this child's records go. A slot rather than fields of the logger: the `log` crate's
    /// logger is set once per process image, and a fork server's children inherit the server's.
    static FORWARD_TO: Option<Destination> = || None;
}

struct Destination {
    conn: Connection<Record>,
    name: String,
    pid: u32,
}

struct Forwarder;

static FORWARDER: Forwarder = Forwarder;

impl log::Log for Forwarder {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let dest = FORWARD_TO.lock();
        let Some(dest) = dest.as_ref() else { return };
        // A parent that is gone cannot be told; logging must never fail the child.
        let _ = dest.conn.send(Record {
            level: record.level() as usize,
            target: record.target().to_string(),
            module_path: record.module_path().map(str::to_string),
            file: record.file().map(str::to_string),
            line: record.line(),
            message: record.args().to_string(),
            name: dest.name.clone(),
            pid: dest.pid,
        });
    }

    fn flush(&self) {}
}

/// In a child: forward this process's `log` records to the parent.
pub(crate) fn install(sink: Option<Sink>) {
    let mut dest = FORWARD_TO.lock();
    let Some(sink) = sink else {
        *dest = None;
        return;
    };
    *dest = Some(Destination {
        conn: sink.conn,
        name: crate::identity::my_name(),
        pid: crate::sys::getpid(),
    });
    drop(dest);
    // Fails when a logger is already set: in a fork server's child, it is ours (and reads the
    // slot just replaced); in a `Fork` child, it is the parent's copy (see the module docs).
    let ours = log::set_logger(&FORWARDER).is_ok()
        || std::ptr::addr_eq(
            log::logger() as *const dyn log::Log,
            &FORWARDER as *const Forwarder,
        );
    if ours {
        let filter = log::LevelFilter::iter()
            .nth(sink.max_level)
            .unwrap_or(log::LevelFilter::Trace);
        log::set_max_level(filter);
    }
}
