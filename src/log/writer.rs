//! The single writer: appends frames to the active segment and makes them durable.
//!
//! Appends go to an in-memory batch; [`LogWriter::flush`] writes the batch with one
//! `write` and, when asked, one `fdatasync` — that is where group commit happens. A failed
//! write or fsync cuts the file back to its last durable length, so the records of a failed
//! batch are never left half on disk and never reported as written.
//!
//! The active segment is zero-filled ahead of the records ([`RESERVE`] bytes at a time, up
//! to `--segment_bytes`) and batches overwrite those zeros. Why: a write that grows the file
//! changes its size, and `fdatasync` must then commit the filesystem's journal too — on
//! ext4 a second round trip to the disk and a hand-off to its journal thread (233 µs against
//! 125 µs per 5 KB `fdatasync` on this machine's disk). The zeros are written by the batch
//! that crosses into them, with its one `fdatasync`. Readers never read past what was
//! flushed ([`SegmentMeta::end`]); a segment is cut back to its records when it is closed
//! and when the server stops, and recovery cuts the zeros a crash left (`recovery.rs`).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::frame::{self, MAX_PAYLOAD};
use super::reader::SegmentMeta;
use super::segment::create as create_segment;
use super::sparse_index::SparseIndex;
use super::{Cursor, LogError};

/// Zeros written ahead of the records of the active segment at a time: one 256 KiB write
/// took 0.4 ms with its `fdatasync` here, and spares the ~50 batches of 5 KB that follow
/// a journal commit each.
pub const RESERVE: u64 = 256 * 1024;

/// What [`RESERVE`] is written from, a piece at a time: a static buffer (the kernel's zero
/// page once read) instead of a 256 KiB heap allocation per reservation, which made the
/// allocator consolidate its free lists on the writer thread.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// The one writer of a log; owned by the engine's writer thread.
pub struct LogWriter {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Bytes of the active segment that are written (and, after a sync, durable).
    len: u64,
    /// The file's length: `len` plus the zeros written ahead of the records.
    reserved: u64,
    /// `len` as readers see it (the active segment's [`SegmentMeta::end`]).
    end: Arc<AtomicU64>,
    frames: u64,
    batch: Vec<u8>,
    batch_frames: u64,
    batch_index: SparseIndex,
    /// The offset of the active segment's last index entry (flushed batches only).
    indexed_at: Option<u64>,
    segment_bytes: u64,
    segments: Arc<RwLock<Vec<SegmentMeta>>>,
    /// Set when a failed write could not be cut back; repaired before the next write.
    needs_repair: bool,
}

impl LogWriter {
    /// Takes over the active segment, whose records end at `len` (recovery cut anything
    /// after them) and whose [`SegmentMeta::end`] is `end`.
    pub(crate) fn resume(
        dir: PathBuf,
        path: PathBuf,
        len: u64,
        frames: u64,
        segment_bytes: u64,
        segments: Arc<RwLock<Vec<SegmentMeta>>>,
        end: Arc<AtomicU64>,
    ) -> Result<Self, LogError> {
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        end.store(len, Ordering::Release);
        let indexed_at = segments
            .read()
            .expect("segments lock")
            .last()
            .and_then(|active| active.index.last_offset());
        Ok(LogWriter {
            indexed_at,
            dir,
            path,
            file,
            len,
            reserved: len,
            end,
            frames,
            batch: Vec::with_capacity(64 * 1024),
            batch_frames: 0,
            batch_index: SparseIndex::default(),
            segment_bytes: segment_bytes.max(4096),
            segments,
            needs_repair: false,
        })
    }

    /// Adds one record to the current batch; nothing reaches the disk before [`Self::flush`].
    pub fn append(&mut self, cursor: Cursor, payload: &[u8]) -> Result<(), LogError> {
        if payload.is_empty() || payload.len() > MAX_PAYLOAD {
            return Err(LogError::TooLarge(payload.len()));
        }
        if self.batch.is_empty() && self.len >= self.segment_bytes {
            self.rotate(cursor)?;
        }
        self.batch_index.note_after(
            self.frames + self.batch_frames,
            cursor,
            self.len + self.batch.len() as u64,
            self.indexed_at,
        );
        self.batch_frames += 1;
        frame::encode_into(&mut self.batch, payload);
        Ok(())
    }

    /// Whether the batch has brought the active segment to `--segment_bytes`: the caller
    /// should flush it before appending more, so the next record starts a new segment and a
    /// segment passes `--segment_bytes` by one command's frames at most, however large a
    /// batch gets (readers refuse segments much larger, see `segment::max_len`).
    pub fn segment_full(&self) -> bool {
        !self.batch.is_empty() && self.len + self.batch.len() as u64 >= self.segment_bytes
    }

    /// Whether records were appended since the last flush.
    pub fn has_batch(&self) -> bool {
        !self.batch.is_empty()
    }

    /// Writes the batch; with `sync`, also waits until it is on stable storage.
    ///
    /// On error the batch is discarded and the segment is cut back to what it held before.
    pub fn flush(&mut self, sync: bool) -> Result<(), LogError> {
        if self.needs_repair {
            self.cut_back()?;
        }
        if self.batch.is_empty() {
            return if sync { self.sync() } else { Ok(()) };
        }
        let written = self.write_batch(sync);
        if let Err(e) = written {
            self.discard_batch();
            // The fsync gate: after a failed write or fsync nothing of the batch may count as
            // written, so the file goes back to its last known-good length.
            self.needs_repair = true;
            let _ = self.cut_back();
            return Err(LogError::io(&self.path, e));
        }
        // Crash tests: the batch is written (and fsynced under `always`), no request has been
        // answered yet.
        #[cfg(feature = "fault-injection")]
        super::fault::abort_at("log:after_flush");
        self.len += self.batch.len() as u64;
        self.reserved = self.reserved.max(self.len);
        self.end.store(self.len, Ordering::Release);
        self.frames += self.batch_frames;
        self.batch_frames = 0;
        self.batch.clear();
        if !self.batch_index.is_empty() {
            self.indexed_at = self.batch_index.last_offset();
            let mut segments = self.segments.write().expect("segments lock");
            if let Some(active) = segments.last_mut() {
                active.index.extend(&mut self.batch_index);
            }
        }
        Ok(())
    }

    #[cfg(not(feature = "fault-injection"))]
    fn write_batch(&mut self, sync: bool) -> std::io::Result<()> {
        self.file.write_all_at(&self.batch, self.len)?;
        self.reserve_ahead();
        if sync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// When this batch grew the file (its `fdatasync` commits the journal anyway), zeros
    /// up to [`RESERVE`] bytes past it, never past `--segment_bytes`, for the next batches
    /// to overwrite. A failure (a full disk) costs only speed: the batch is written, and
    /// zeros written in part are what readers and recovery pass over.
    fn reserve_ahead(&mut self) {
        let end = self.len + self.batch.len() as u64;
        if end <= self.reserved {
            return;
        }
        let target = (end + RESERVE).min(self.segment_bytes);
        if let Err(e) = self.zero_fill(end, target) {
            tracing::debug!(error = %e, "no zeros reserved ahead of the log");
            // Not tried again for every batch of a full disk: only past `target`.
            self.reserved = self.reserved.max(target);
        }
    }

    /// Writes zeros over `[from, to)` of the active segment, past its durable frames.
    /// `reserved` covers every piece tried, even one that failed (the file may reach its end
    /// now), so `release_reserve` cuts whatever was reached before the segment is closed.
    fn zero_fill(&mut self, from: u64, to: u64) -> std::io::Result<()> {
        let mut at = from;
        while at < to {
            let piece = &ZEROS[..(to - at).min(ZEROS.len() as u64) as usize];
            self.reserved = self.reserved.max(at + piece.len() as u64);
            self.file.write_all_at(piece, at)?;
            at += piece.len() as u64;
        }
        Ok(())
    }

    /// The same, suffering the fault the test asks for (see [`super::fault`]).
    #[cfg(feature = "fault-injection")]
    fn write_batch(&mut self, sync: bool) -> std::io::Result<()> {
        use super::fault::{DiskFault, current};
        use std::io::{Error, ErrorKind};
        match current() {
            Some(DiskFault::ShortWrite) => {
                self.file
                    .write_all_at(&self.batch[..self.batch.len() / 2], self.len)?;
                Err(Error::new(ErrorKind::WriteZero, "injected short write"))
            }
            Some(DiskFault::Eio) => Err(Error::from_raw_os_error(5)),
            Some(DiskFault::NoSpace) => Err(Error::from_raw_os_error(28)),
            Some(DiskFault::FsyncError) => {
                self.file.write_all_at(&self.batch, self.len)?;
                self.reserve_ahead();
                Err(Error::other("injected fsync failure"))
            }
            Some(DiskFault::CrashAfterWrite) => {
                self.file.write_all_at(&self.batch, self.len)?;
                self.reserve_ahead();
                eprintln!("injected crash between write and fsync");
                std::process::abort();
            }
            None => {
                self.file.write_all_at(&self.batch, self.len)?;
                self.reserve_ahead();
                if sync {
                    self.file.sync_data()?;
                }
                Ok(())
            }
        }
    }

    /// Whether the file can be written and synced now, tried without a record: the repair a
    /// failed batch left pending, zeros over the next [`RESERVE`] bytes the batches will
    /// take, then an empty write and an fsync (under fault injection, the injected fault, as
    /// a batch would meet it). Called between batches only.
    ///
    /// Why the zeros: an empty write succeeds on a full disk or an exhausted quota, so the
    /// probe said "ready" while every insert failed. Zeros over the span ahead allocate what
    /// of it is not yet allocated, failing as a batch there would; once they are written,
    /// the batches that fit in that span need no new space.
    pub fn probe(&mut self) -> Result<(), LogError> {
        debug_assert!(self.batch.is_empty(), "a probe between batches only");
        if self.needs_repair {
            self.cut_back()?;
        }
        // Past the durable frames only: zeros there are what readers and recovery pass over.
        let target = (self.len + RESERVE).min(self.segment_bytes);
        self.zero_fill(self.len, target)
            .map_err(|e| LogError::io(&self.path, e))?;
        self.write_batch(true)
            .map_err(|e| LogError::io(&self.path, e))
    }

    /// Makes everything written so far durable.
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.file
            .sync_data()
            .map_err(|e| LogError::io(&self.path, e))
    }

    fn discard_batch(&mut self) {
        self.batch.clear();
        self.batch_frames = 0;
        self.batch_index = SparseIndex::default();
    }

    fn cut_back(&mut self) -> Result<(), LogError> {
        self.file
            .set_len(self.len)
            .and_then(|_| self.file.sync_all())
            .map_err(|e| LogError::io(&self.path, e))?;
        self.reserved = self.len;
        self.needs_repair = false;
        Ok(())
    }

    /// Cuts the zeros written ahead of the records and makes that durable: a closed
    /// segment, and the active one of a stopped server, end with their last record.
    pub fn release_reserve(&mut self) -> Result<(), LogError> {
        if self.reserved > self.len {
            self.file
                .set_len(self.len)
                .and_then(|_| self.file.sync_data())
                .map_err(|e| LogError::io(&self.path, e))?;
            self.reserved = self.len;
        }
        Ok(())
    }

    /// Closes the active segment (unless it holds no record yet) and starts an empty one
    /// whose first cursor is `next`, the cursor the next record will have: compaction only
    /// rewrites closed segments, so this is how it can reach the newest records. Call it
    /// between batches.
    pub fn close_segment(&mut self, next: Cursor) -> Result<(), LogError> {
        debug_assert!(self.batch.is_empty(), "close_segment inside a batch");
        if self.frames == 0 {
            return Ok(());
        }
        self.rotate(next)
    }

    fn rotate(&mut self, first: Cursor) -> Result<(), LogError> {
        self.release_reserve()?;
        self.sync()?;
        let path = create_segment(&self.dir, first)?;
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        let len = super::segment::HEADER_LEN as u64;
        let end = Arc::new(AtomicU64::new(len));
        self.segments
            .write()
            .expect("segments lock")
            .push(SegmentMeta {
                first,
                path: path.clone(),
                index: SparseIndex::default(),
                end: Arc::clone(&end),
            });
        self.file = file;
        self.path = path;
        self.len = len;
        self.reserved = len;
        self.end = end;
        self.indexed_at = None;
        self.frames = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;
    use crate::log::segment::{self, HEADER_LEN};

    use crate::log::test_codec as codec;

    fn payload(cursor: Cursor, len: usize) -> Vec<u8> {
        let mut payload = cursor.to_le_bytes().to_vec();
        payload.resize(len, b'x');
        payload
    }

    /// Where the intact frames of a segment file end, by recovery's own scan; a fault fails.
    fn records_end(path: &Path) -> u64 {
        let bytes = fs::read(path).unwrap();
        let scan = crate::log::recovery::scan_segment(path, &bytes, codec, 0, |_, _| {}).unwrap();
        assert!(scan.fault.is_none(), "{}: {:?}", path.display(), scan.fault);
        assert_eq!(scan.valid_len + scan.zeros, bytes.len() as u64);
        scan.valid_len
    }

    fn fresh(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("broker-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn zeros_go_ahead_of_the_records_and_a_crash_leaves_them_to_the_next_open() {
        let dir = fresh("reserve-crash");
        let mut log = crate::log::open(&dir, codec, 1 << 20, |_, _| {}).unwrap();
        for cursor in 1..=10 {
            log.writer.append(cursor, &payload(cursor, 100)).unwrap();
            log.writer.flush(true).unwrap();
        }
        let (_, path) = segment::list(&dir).unwrap().pop().unwrap();
        let end = HEADER_LEN as u64 + 10 * 108;
        assert_eq!(records_end(&path), end);
        // The first batch grew the file and wrote the zeros; the nine after it overwrote them.
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            HEADER_LEN as u64 + 108 + RESERVE
        );
        // A reader asked for everything stops where the flushed frames end, not in the zeros.
        let mut seen = Vec::new();
        let last = log
            .reader
            .read_after(0, Cursor::MAX, |cursor, _| {
                seen.push(cursor);
                true
            })
            .unwrap();
        assert_eq!((seen, last), ((1..=10).collect::<Vec<_>>(), 10));

        // The process dies with the zeros in place: the next open cuts them, and they are no
        // torn tail to report.
        drop(log);
        let mut seen = Vec::new();
        let log = crate::log::open(&dir, codec, 1 << 20, |cursor, _| seen.push(cursor)).unwrap();
        assert_eq!(seen, (1..=10).collect::<Vec<_>>());
        assert!(log.repairs.is_empty(), "{:?}", log.repairs);
        assert_eq!(fs::metadata(&path).unwrap().len(), end);
        drop(log);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn closed_segments_and_a_released_one_end_with_their_last_record() {
        let dir = fresh("reserve-closed");
        let mut log = crate::log::open(&dir, codec, 4096, |_, _| {}).unwrap();
        for cursor in 1..=40 {
            log.writer.append(cursor, &payload(cursor, 600)).unwrap();
            log.writer.flush(true).unwrap();
        }
        let mut listed = segment::list(&dir).unwrap();
        assert!(listed.len() >= 5, "{} segments", listed.len());
        let (_, active) = listed.pop().unwrap();
        for (_, path) in &listed {
            let len = fs::metadata(path).unwrap().len();
            assert_eq!(len, records_end(path), "{}", path.display());
        }
        // Zeros are never written past --segment_bytes.
        let len = fs::metadata(&active).unwrap().len();
        assert!(len > records_end(&active) && len <= 4096, "{len}");
        // Closed before it is full (as compaction closes the active segment), a segment is
        // cut back to its records: one closed at the limit has no zeros left to cut.
        log.writer.close_segment(41).unwrap();
        assert_eq!(fs::metadata(&active).unwrap().len(), records_end(&active));
        // The new active one, released as a stopping server does, too.
        log.writer.append(41, &payload(41, 600)).unwrap();
        log.writer.flush(true).unwrap();
        let (_, newest) = segment::list(&dir).unwrap().pop().unwrap();
        assert!(fs::metadata(&newest).unwrap().len() > records_end(&newest));
        log.writer.release_reserve().unwrap();
        assert_eq!(fs::metadata(&newest).unwrap().len(), records_end(&newest));
        drop(log);

        // Zeros after the records of a closed segment are damage: the open refuses, and
        // changes nothing.
        let (_, first) = &listed[0];
        let mut bytes = fs::read(first).unwrap();
        bytes.extend_from_slice(&[0; 100]);
        fs::write(first, &bytes).unwrap();
        let refused = crate::log::open(&dir, codec, 4096, |_, _| {})
            .err()
            .expect("the open must refuse");
        assert!(
            refused
                .to_string()
                .contains("100 zero bytes after the last record"),
            "{refused}"
        );
        assert_eq!(fs::read(first).unwrap(), bytes);
        fs::remove_dir_all(&dir).unwrap();
    }
}
