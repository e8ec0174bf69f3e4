//! Who pays for a worker's death. A pure decision (no processes, no locks) so that every case can
//! be tested on its own; the pool thread gathers what the dead worker held and applies it.
//!
//! A worker names the item it is at on its board before it decodes the item's argument and runs
//! it, so a death almost always names one item: that item fails, and everything else the worker
//! held goes to another worker. A death that names none of the items held (the worker was
//! between items, reading a batch, or had not claimed it yet) fails nothing, but counts against
//! every run held: after [`STRIKES`] such deaths in a row, the first item not done of the first
//! run that reached it fails with `WorkerLost`. So whatever kills workers, work that keeps
//! killing them ends, and the number of replacement workers it costs is bounded.

use std::ops::Range;

/// Where a worker is: item `position` of batch `batch`. Its board holds it as one word
/// ([`Cursor::word`]), so that the pool reads it whole, even after the worker's death; cursors
/// order as that word does (batch first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Cursor {
    /// The batch (ids start at 1: a fresh board's all-zero cursor names nothing).
    pub(crate) batch: u32,
    /// The item's position among the batch's items, run after run.
    pub(crate) position: u32,
}

impl Cursor {
    pub(crate) const fn new(batch: u32, position: u32) -> Cursor {
        Cursor { batch, position }
    }

    /// The board's word for it.
    pub(crate) const fn word(self) -> u64 {
        (self.batch as u64) << 32 | self.position as u64
    }

    /// The cursor a board's word holds.
    pub(crate) const fn from_word(word: u64) -> Cursor {
        Cursor {
            batch: (word >> 32) as u32,
            position: word as u32,
        }
    }

    /// The cursor `n` items further in the same batch.
    pub(crate) const fn plus(self, n: u32) -> Cursor {
        Cursor::new(self.batch, self.position + n)
    }
}

/// Deaths in a row, none naming an item of a run and none of its items resolved in between, after
/// which the run's next item fails with `WorkerLost` (an argument too large for a worker to
/// receive, for example). One such death can be bad luck (a stray `kill`, the OOM killer picking
/// an idle worker); three in a row on the same work are not.
pub(crate) const STRIKES: u32 = 3;

/// One run a dead worker held, as blame sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Held {
    /// Where its items not reported yet lie.
    pub(crate) pending: Range<Cursor>,
    /// Deaths it went through with no item of it named or resolved, before this one.
    pub(crate) strikes: u32,
}

/// What a death costs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// The item that fails: the run (an index into `held`) and the item's offset in its
    /// `pending` range.
    pub(crate) blamed: Option<(usize, u64)>,
    /// Was the blamed item named by the board (false: the run struck out)?
    pub(crate) named: bool,
    /// Each held run's strikes after this death.
    pub(crate) strikes: Vec<u32>,
}

/// Decides what the death of a worker that held `held` (in the order it runs them) costs.
/// `cursor` is where its board said it was (`None`: it ended normally, naming nothing).
pub(crate) fn blame(cursor: Option<Cursor>, held: &[Held]) -> Verdict {
    let named = cursor.and_then(|c| {
        held.iter()
            .position(|h| h.pending.contains(&c))
            .map(|i| (i, u64::from(c.position - held[i].pending.start.position)))
    });
    if let Some((run, _)) = named {
        // The named run made progress (its item resolves); the others were not at fault.
        let mut strikes: Vec<u32> = held.iter().map(|h| h.strikes).collect();
        strikes[run] = 0;
        return Verdict {
            blamed: named,
            named: true,
            strikes,
        };
    }
    let mut strikes: Vec<u32> = held.iter().map(|h| h.strikes.saturating_add(1)).collect();
    let out = strikes.iter().position(|&s| s >= STRIKES);
    if let Some(run) = out {
        strikes[run] = 0;
    }
    Verdict {
        blamed: out.map(|run| (run, 0)),
        named: false,
        strikes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(batch: u32, p: u32) -> Cursor {
        Cursor::new(batch, p)
    }

    #[test]
    fn a_cursor_is_one_word_and_orders_as_it() {
        let c = Cursor::new(7, 5);
        assert_eq!(c.word(), 7 << 32 | 5);
        assert_eq!(Cursor::from_word(c.word()), c);
        assert!(Cursor::new(7, u32::MAX) < Cursor::new(8, 0));
        assert_eq!(c.plus(3), Cursor::new(7, 8));
        assert_eq!(Cursor::from_word(0), Cursor::new(0, 0));
    }

    fn held(batch: u32, range: Range<u32>, strikes: u32) -> Held {
        Held {
            pending: pos(batch, range.start)..pos(batch, range.end),
            strikes,
        }
    }

    #[test]
    fn the_named_item_fails_and_nothing_else() {
        let h = [held(7, 0..3, 0), held(7, 3..10, 2), held(8, 0..4, 1)];
        let v = blame(Some(pos(7, 5)), &h);
        assert_eq!(v.blamed, Some((1, 2)));
        assert!(v.named);
        // The named run starts again; the others keep their count (they were not at fault).
        assert_eq!(v.strikes, [0, 0, 1]);
        // The first and the last item of a range.
        assert_eq!(blame(Some(pos(7, 0)), &h).blamed, Some((0, 0)));
        assert_eq!(blame(Some(pos(8, 3)), &h).blamed, Some((2, 3)));
    }

    #[test]
    fn a_cursor_on_an_item_already_reported_names_nothing() {
        // Items 0..2 of batch 7 were reported: the worker died after them, between items.
        let h = [held(7, 2..5, 0)];
        let v = blame(Some(pos(7, 1)), &h);
        assert_eq!((v.blamed, v.strikes), (None, vec![1]));
        // A cursor left on an older batch, or on a batch the worker never got.
        assert_eq!(blame(Some(pos(6, 2)), &h).blamed, None);
        assert_eq!(blame(Some(pos(7, 5)), &h).blamed, None);
        // A fresh worker's board: position zero of batch zero (batches start at 1).
        assert_eq!(blame(Some(Cursor::from_word(0)), &h).blamed, None);
    }

    #[test]
    fn deaths_that_name_nothing_strike_out_after_three_in_a_row() {
        let mut h = vec![held(1, 0..4, 0), held(2, 0..2, 0)];
        let mut lost = Vec::new();
        for death in 1..=7 {
            let v = blame(Some(pos(99, 0)), &h);
            if let Some(b) = v.blamed {
                assert!(!v.named);
                lost.push((death, b));
            }
            for (run, s) in h.iter_mut().zip(&v.strikes) {
                run.strikes = *s;
            }
        }
        // Both runs reach three strikes on the third death: the first in the worker's order pays
        // then, the other on the next death; each pays one item per three deaths at most.
        assert_eq!(lost, [(3, (0, 0)), (4, (1, 0)), (6, (0, 0)), (7, (1, 0))]);
    }

    #[test]
    fn a_normal_end_names_nothing_but_still_counts() {
        let h = [held(3, 0..1, STRIKES - 1)];
        let v = blame(None, &h);
        assert_eq!(v.blamed, Some((0, 0)));
        assert!(!v.named);
        assert_eq!(v.strikes, [0]);
    }

    #[test]
    fn nothing_held_costs_nothing() {
        let v = blame(Some(pos(1, 0)), &[]);
        assert_eq!(v.blamed, None);
        assert!(v.strikes.is_empty());
        assert_eq!(blame(None, &[]).blamed, None);
    }

    #[test]
    fn an_empty_range_is_never_named() {
        let h = [held(4, 2..2, 0), held(4, 2..3, 0)];
        assert_eq!(blame(Some(pos(4, 2)), &h).blamed, Some((1, 0)));
    }
}
