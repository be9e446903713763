//! The sparse index of a segment: the cursor and byte offset of every [`EVERY`]th frame, and
//! of the first frame [`BYTES_EVERY`] or more past the last one indexed, so a reader starting
//! after cursor N seeks near it instead of reading the segment from its header. Built by whoever lays frames down (the writer, recovery's scan, compaction) and
//! read by the log's readers; checkpoints store it so a start need not rebuild it.

use super::Cursor;
use super::segment::HEADER_LEN;

/// One index entry every this many frames.
pub const EVERY: u64 = 64;

/// One index entry at least every this many bytes (1 MiB): with large events, 64 frames are
/// many megabytes, and a reader seeking a cursor read them all (another tenant's 1 MB events
/// made every history page read 40 MB, an attack review).
pub const BYTES_EVERY: u64 = 1024 * 1024;

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
        let previous = self.last_offset();
        self.note_after(nth, cursor, offset, previous);
    }

    /// [`Self::note`] for an index that continues another (a batch's, after its segment's):
    /// `previous` is the offset of the last entry before it.
    pub fn note_after(&mut self, nth: u64, cursor: Cursor, offset: u64, previous: Option<u64>) {
        let previous = self.last_offset().or(previous);
        if nth.is_multiple_of(EVERY) || previous.is_some_and(|p| offset >= p + BYTES_EVERY) {
            self.0.push((cursor, offset));
        }
    }

    /// The offset of the last entry.
    pub fn last_offset(&self) -> Option<u64> {
        self.0.last().map(|(_, offset)| *offset)
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
    fn large_frames_are_indexed_by_their_bytes_and_a_batch_continues_its_segment() {
        // Frames of 600,000 bytes: every second one is 1 MiB past the last entry.
        let mut index = SparseIndex::default();
        for nth in 0..9u64 {
            index.note(nth, 1 + nth, 48 + nth * 600_000);
        }
        let cursors: Vec<Cursor> = index.entries().iter().map(|(c, _)| *c).collect();
        assert_eq!(cursors, [1, 3, 5, 7, 9]);
        // A reader after cursor 7 starts at cursor 7's frame, at most one frame early.
        assert_eq!(index.start_after(7), 48 + 6 * 600_000);
        // A batch's own index continues from the segment's last entry, not from nothing.
        let mut batch = SparseIndex::default();
        let last = index.last_offset();
        batch.note_after(9, 10, 48 + 9 * 600_000, last);
        assert!(batch.is_empty(), "600,000 bytes past the last entry");
        batch.note_after(10, 11, 48 + 10 * 600_000, last);
        assert_eq!(batch.entries(), [(11, 48 + 10 * 600_000)]);
        // Small frames: only every 64th.
        let mut small = SparseIndex::default();
        for nth in 0..200u64 {
            small.note(nth, 1 + nth, 48 + nth * 100);
        }
        assert_eq!(small.entries().len(), 4);
    }

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
