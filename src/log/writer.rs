//! The single writer: appends frames to the active segment and makes them durable.
//!
//! Appends go to an in-memory batch; [`LogWriter::flush`] writes the batch with one
//! `write` and, when asked, one `fdatasync` — that is where group commit happens. A failed
//! write or fsync cuts the file back to its last durable length, so the records of a failed
//! batch are never left half on disk and never reported as written.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use super::frame::{self, MAX_PAYLOAD};
use super::reader::SegmentMeta;
use super::segment::create as create_segment;
use super::sparse_index::SparseIndex;
use super::{Cursor, LogError};

/// The one writer of a log; owned by the engine's writer thread.
pub struct LogWriter {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Bytes of the active segment that are written (and, after a sync, durable).
    len: u64,
    frames: u64,
    batch: Vec<u8>,
    batch_frames: u64,
    batch_index: SparseIndex,
    segment_bytes: u64,
    segments: Arc<RwLock<Vec<SegmentMeta>>>,
    /// Set when a failed write could not be cut back; repaired before the next write.
    needs_repair: bool,
}

impl LogWriter {
    pub(crate) fn resume(
        dir: PathBuf,
        path: PathBuf,
        len: u64,
        frames: u64,
        segment_bytes: u64,
        segments: Arc<RwLock<Vec<SegmentMeta>>>,
    ) -> Result<Self, LogError> {
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        Ok(LogWriter {
            dir,
            path,
            file,
            len,
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
        self.batch_index.note(
            self.frames + self.batch_frames,
            cursor,
            self.len + self.batch.len() as u64,
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
        self.frames += self.batch_frames;
        self.batch_frames = 0;
        self.batch.clear();
        if !self.batch_index.is_empty() {
            let mut segments = self.segments.write().expect("segments lock");
            if let Some(active) = segments.last_mut() {
                active.index.extend(&mut self.batch_index);
            }
        }
        Ok(())
    }

    #[cfg(not(feature = "fault-injection"))]
    fn write_batch(&mut self, sync: bool) -> std::io::Result<()> {
        self.file.write_all(&self.batch)?;
        if sync {
            self.file.sync_data()?;
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
                self.file.write_all(&self.batch[..self.batch.len() / 2])?;
                Err(Error::new(ErrorKind::WriteZero, "injected short write"))
            }
            Some(DiskFault::Eio) => Err(Error::from_raw_os_error(5)),
            Some(DiskFault::NoSpace) => Err(Error::from_raw_os_error(28)),
            Some(DiskFault::FsyncError) => {
                self.file.write_all(&self.batch)?;
                Err(Error::other("injected fsync failure"))
            }
            Some(DiskFault::CrashAfterWrite) => {
                self.file.write_all(&self.batch)?;
                eprintln!("injected crash between write and fsync");
                std::process::abort();
            }
            None => {
                self.file.write_all(&self.batch)?;
                if sync {
                    self.file.sync_data()?;
                }
                Ok(())
            }
        }
    }

    /// Whether the file can be written and synced now, tried without a record: the repair a
    /// failed batch left pending, then an empty write and an fsync (under fault injection, the
    /// injected fault, as a batch would meet it). Called between batches only.
    pub fn probe(&mut self) -> Result<(), LogError> {
        debug_assert!(self.batch.is_empty(), "a probe between batches only");
        if self.needs_repair {
            self.cut_back()?;
        }
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
        self.needs_repair = false;
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
        self.sync()?;
        let path = create_segment(&self.dir, first)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        self.segments
            .write()
            .expect("segments lock")
            .push(SegmentMeta {
                first,
                path: path.clone(),
                index: SparseIndex::default(),
            });
        self.file = file;
        self.path = path;
        self.len = super::segment::HEADER_LEN as u64;
        self.frames = 0;
        Ok(())
    }
}
