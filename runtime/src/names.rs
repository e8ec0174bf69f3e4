//! The tree's name table: names to actor addresses, in shared memory that the root program
//! makes and every process it starts inherits (the table travels with each child's job), so a
//! name is shared by the root and all its descendants and by nobody else. The registry
//! (`actor::register`, `whereis`) is built on it; the start methods carry it to children.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::shm::{Layout, Shared};
use crate::sync::robust::RawMutex;
use crate::wire::Wait;

procactor_os::shared_struct! {
    /// The table's header; its slots follow it (see [`Slot`]).
    pub(crate) struct Table {
        mutex: RawMutex,
    }
}

impl Layout for Table {
    const MAGIC: u32 = 0x4e41_4d45;
    fn in_use_here(&self) -> bool {
        self.mutex.held_in_this_process()
    }
}

/// How many names a process tree may register at once.
const SLOTS: usize = 1024;
/// Longest name, in bytes.
pub(crate) const NAME_MAX: usize = 80;
/// Longest actor address (an abstract socket name: 107 bytes).
pub(crate) const ADDR_MAX: usize = 107;
/// One slot: `[used u8][name_len u8][name; 80][addr_len u8][addr; 107]`, padded.
const SLOT: usize = 256;
const NAME_AT: usize = 2;
const ADDR_LEN_AT: usize = NAME_AT + NAME_MAX;
const ADDR_AT: usize = ADDR_LEN_AT + 1;
const _: () = assert!(ADDR_AT + ADDR_MAX <= SLOT);

/// How long a registry operation waits for the table's lock (held only for a scan and a copy).
const LOCK_WAIT: Duration = Duration::from_secs(10);

static TABLE: OnceLock<Shared<Table>> = OnceLock::new();

/// This process tree's table: the one this process was started with, or (in the root) a new one.
pub(crate) fn table() -> Result<Shared<Table>> {
    if let Some(t) = TABLE.get() {
        return Ok(t.clone());
    }
    let fresh = Shared::<Table>::new("procactor-names", SLOTS * SLOT)?;
    Ok(TABLE.get_or_init(|| fresh).clone())
}

/// Adopts the table a child's job carried (before anything else in the child uses names).
pub(crate) fn install(table: Shared<Table>) {
    let _ = TABLE.set(table);
}

/// One slot's bytes, read or written under the table's lock.
struct Slot<'a>(&'a mut [u8]);

impl Slot<'_> {
    fn used(&self) -> bool {
        self.0[0] == 1
    }

    fn name(&self) -> &[u8] {
        let len = usize::from(self.0[1]).min(NAME_MAX);
        &self.0[NAME_AT..NAME_AT + len]
    }

    fn addr(&self) -> String {
        let len = usize::from(self.0[ADDR_LEN_AT]).min(ADDR_MAX);
        String::from_utf8_lossy(&self.0[ADDR_AT..ADDR_AT + len]).into_owned()
    }

    /// Fills the slot; `used` is set last, so a writer killed half-way leaves a free slot.
    fn fill(&mut self, name: &str, addr: &str) {
        self.0[0] = 0;
        self.0[1] = name.len() as u8;
        self.0[NAME_AT..NAME_AT + name.len()].copy_from_slice(name.as_bytes());
        self.0[ADDR_LEN_AT] = addr.len() as u8;
        self.0[ADDR_AT..ADDR_AT + addr.len()].copy_from_slice(addr.as_bytes());
        std::sync::atomic::fence(Ordering::Release);
        self.0[0] = 1;
    }

    fn clear(&mut self) {
        self.0[0] = 0;
    }
}

/// Runs `f` on the table's slots, under its lock.
fn with_slots<R>(f: impl FnOnce(&mut [Slot]) -> R) -> Result<R> {
    let table = table()?;
    // Under the table's lock alone are its slots read or written. A holder that died left at
    // worst a slot with `used` clear (see `Slot::fill`).
    table.with_tail_locked(
        |t| &t.mutex,
        Wait::timeout(LOCK_WAIT),
        |bytes| {
            // At most SLOTS whole slots, whatever the mapping holds: a table shorter than
            // ours (not made by this binary) has fewer, never a slice past its end.
            let mut slots: Vec<Slot> = bytes.chunks_exact_mut(SLOT).take(SLOTS).map(Slot).collect();
            f(&mut slots)
        },
    )
}

pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > NAME_MAX || name.contains('\0') {
        return Err(Error::Unsupported(
            "actor names must be 1 to 80 bytes long, without NUL",
        ));
    }
    Ok(())
}

/// Gives `name` to `addr`, unless a live holder (`alive`) has it. A name whose holder ended is
/// taken over; a full table makes room from ended holders.
pub(crate) fn claim(name: &str, addr: &str, alive: fn(&str) -> bool) -> Result<()> {
    with_slots(|slots| {
        let mut free = None;
        for (i, s) in slots.iter_mut().enumerate() {
            if !s.used() {
                free.get_or_insert(i);
                continue;
            }
            if s.name() == name.as_bytes() {
                if alive(&s.addr()) {
                    return Err(Error::NameTaken(name.to_string()));
                }
                s.fill(name, addr); // its actor ended: the name is free
                return Ok(());
            }
        }
        let free = match free {
            Some(i) => i,
            // Full: names of actors that have ended make room.
            None => slots
                .iter()
                .position(|s| !alive(&s.addr()))
                .ok_or(Error::Unsupported(
                    "the name registry is full (1024 names in this process tree)",
                ))?,
        };
        slots[free].fill(name, addr);
        Ok(())
    })?
}

/// Forgets `name` (nothing if it is not there).
pub(crate) fn release(name: &str) -> Result<()> {
    with_slots(|slots| {
        for s in slots.iter_mut().filter(|s| s.used()) {
            if s.name() == name.as_bytes() {
                s.clear();
            }
        }
    })
}

/// The address registered under `name`, if any.
pub(crate) fn lookup(name: &str) -> Result<Option<String>> {
    with_slots(|slots| {
        slots
            .iter()
            .find(|s| s.used() && s.name() == name.as_bytes())
            .map(|s| s.addr())
    })
}

/// Forgets `name` if it still names `addr` (whose actor has ended).
pub(crate) fn forget_stale(name: &str, addr: &str) {
    let _ = with_slots(|slots| {
        for s in slots.iter_mut().filter(|s| s.used()) {
            if s.name() == name.as_bytes() && s.addr() == addr {
                s.clear();
            }
        }
    });
}
