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

use std::sync::{Mutex, OnceLock};
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

static COLLECTOR: OnceLock<Option<Collector>> = OnceLock::new();

/// A sink for a new child, or `None` when the parent logs nothing.
pub(crate) fn sink() -> Option<Sink> {
    let max_level = log::max_level();
    if max_level == log::LevelFilter::Off {
        return None;
    }
    let c = COLLECTOR
        .get_or_init(|| {
            let (read, write) = Pipe::<Record>::simplex().ok()?;
            let spawned = std::thread::Builder::new()
                .name("procactor-logs".into())
                .spawn(|| collect(COLLECTOR.get().and_then(|c| c.as_ref())));
            spawned.ok()?;
            Some(Collector {
                read,
                write,
                emitting: Mutex::new(()),
            })
        })
        .as_ref()?;
    Some(Sink {
        conn: c.write.clone(),
        max_level: max_level as usize,
    })
}

/// Threads the runtime itself runs in this process (for the fork-safety warning).
pub(crate) fn service_threads() -> usize {
    usize::from(COLLECTOR.get().is_some_and(|c| c.is_some()))
}

fn collect(c: Option<&'static Collector>) {
    // The thread may start before the OnceLock is filled; wait for it.
    let c = match c {
        Some(c) => c,
        None => loop {
            std::thread::sleep(Duration::from_millis(1));
            if let Some(c) = COLLECTOR.get() {
                match c {
                    Some(c) => break c,
                    None => return,
                }
            }
        },
    };
    loop {
        match c.read.poll(Duration::from_secs(3600)) {
            Ok(_) => drain_from(c),
            Err(_) => return,
        }
    }
}

/// Emits every record already received (called by `join`, so a child's records come before its
/// result).
pub(crate) fn drain() {
    if let Some(Some(c)) = COLLECTOR.get() {
        drain_from(c);
    }
}

fn drain_from(c: &Collector) {
    let _emitting = c.emitting.lock().unwrap_or_else(|p| p.into_inner());
    while let Ok(Some(r)) = c.read.try_recv() {
        emit(&r);
    }
}

fn level_of(n: usize) -> log::Level {
    match n {
        1 => log::Level::Error,
        2 => log::Level::Warn,
        3 => log::Level::Info,
        4 => log::Level::Debug,
        _ => log::Level::Trace,
    }
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

struct Forwarder {
    conn: Connection<Record>,
    name: String,
    pid: u32,
}

impl log::Log for Forwarder {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // A parent that is gone cannot be told; logging must never fail the child.
        let _ = self.conn.send(Record {
            level: record.level() as usize,
            target: record.target().to_string(),
            module_path: record.module_path().map(str::to_string),
            file: record.file().map(str::to_string),
            line: record.line(),
            message: record.args().to_string(),
            name: self.name.clone(),
            pid: self.pid,
        });
    }

    fn flush(&self) {}
}

/// In a child: forward this process's `log` records to the parent.
pub(crate) fn install(sink: Option<Sink>) {
    let Some(sink) = sink else { return };
    let me = crate::process::current_process();
    let fwd = Forwarder {
        conn: sink.conn,
        name: me.name,
        pid: me.pid,
    };
    if log::set_boxed_logger(Box::new(fwd)).is_ok() {
        let filter = [
            log::LevelFilter::Off,
            log::LevelFilter::Error,
            log::LevelFilter::Warn,
            log::LevelFilter::Info,
            log::LevelFilter::Debug,
            log::LevelFilter::Trace,
        ];
        log::set_max_level(filter[sink.max_level.min(5)]);
    }
}
