//! The sparse index of a segment: the cursor and byte offset of every [`EVERY`]th frame, so a
//! reader starting after cursor N seeks near it instead of reading the segment from its
//! header. Built by whoever lays frames down (the writer, recovery's scan, compaction) and
//! read by the log's readers; checkpoints store it so a start need not rebuild it.

use super::Cursor;
use super::segment::HEADER_LEN;

/// One index entry every this many frames.
pub const EVERY: u64 = 64;

/// `(cursor, offset)` of every [`EVERY`]th frame of one segment, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SparseIndex(Vec<(Cursor, u64)>);

impl SparseIndex {
    /// An index of these entries (as a checkpoint stored them).
    pub fn from_entries(entries: Vec<(Cursor, u64)>) -> Self {
        SparseIndex(entries)
    }

    /// Notes the frame at `offset` holding `cursor`, the `nth` frame of its segment (from 0).
    pub fn note(&mut self, nth: u64, cursor: Cursor, offset: u64) {
        if nth.is_multiple_of(EVERY) {
            self.0.push((cursor, offset));
        }
    }

    /// Moves `other`'s entries (a newer part of the same segment) to the end of this one.
    pub fn extend(&mut self, other: &mut SparseIndex) {
        self.0.append(&mut other.0);
    }

    /// Where a reader wanting the frames after `after` starts: the offset of the last indexed
    /// frame at or before `after + 1`, or the first frame.
    pub fn start_after(&self, after: Cursor) -> u64 {
        let at = self.0.partition_point(|(c, _)| *c <= after + 1);
        at.checked_sub(1).map_or(HEADER_LEN as u64, |j| self.0[j].1)
    }

    /// The entries, in order.
    pub fn entries(&self) -> &[(Cursor, u64)] {
        &self.0
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_64th_frame_is_indexed_and_a_reader_starts_at_or_before_its_cursor() {
        let mut index = SparseIndex::default();
        for nth in 0..200u64 {
            index.note(nth, 10 + nth, 48 + nth * 100);
        }
        assert_eq!(
            index.entries(),
            [(10, 48), (74, 6448), (138, 12848), (202, 19248)]
        );
        assert_eq!(
            index.start_after(0),
            HEADER_LEN as u64,
            "before the first entry"
        );
        assert_eq!(
            index.start_after(73),
            6448,
            "the frame after 73 is 74, indexed"
        );
        assert_eq!(index.start_after(100), 6448);
        assert_eq!(index.start_after(150), 12848);
        assert_eq!(index.start_after(500), 19248);
    }
}
