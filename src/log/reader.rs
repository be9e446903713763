//! Reading records back from a cursor, concurrently with the writer.
//!
//! Readers open segment files on their own and only ask for cursors the writer has already
//! made durable, so they never meet a half-written frame before the cursor they stop at.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use super::frame::{self, FRAME_HEADER};
use super::segment::HEADER_LEN;
use super::sparse_index::SparseIndex;
use super::{Codec, Cursor, LogError};

/// What readers need to know of one segment.
#[derive(Debug, Clone)]
pub struct SegmentMeta {
    /// Cursor of the first record the segment may hold (its name).
    pub first: Cursor,
    /// The file.
    pub path: PathBuf,
    /// Where a reader may start within the segment.
    pub index: SparseIndex,
    /// Where the flushed frames end ([`CLOSED`] once no writer owns the segment): the
    /// active segment's file goes on past it, in zeros written ahead or in a batch being
    /// written, and a reader must not take those for records.
    pub end: Arc<AtomicU64>,
}

/// [`SegmentMeta::end`] of a segment no writer owns: its records end where its file does.
pub const CLOSED: u64 = u64::MAX;

impl SegmentMeta {
    /// A segment no writer appends to.
    pub fn closed(first: Cursor, path: PathBuf, index: SparseIndex) -> Self {
        SegmentMeta {
            first,
            path,
            index,
            end: Arc::new(AtomicU64::new(CLOSED)),
        }
    }
}

/// A cheap, cloneable handle for reading the log.
#[derive(Clone)]
pub struct LogReader {
    dir: PathBuf,
    codec: Codec,
    // A std RwLock: held only to copy a segment's path and index offset, never across I/O.
    segments: Arc<RwLock<Vec<SegmentMeta>>>,
    /// Events below this cursor may have been compacted away.
    horizon: Arc<std::sync::atomic::AtomicU64>,
    /// Frames read back so far (for `/metrics`: how much catch-up reading costs).
    frames_read: Arc<std::sync::atomic::AtomicU64>,
    /// The log's `--segment_bytes`: what compaction aims at and what sets the largest
    /// segment file it reads whole ([`super::segment::max_len`]).
    segment_bytes: u64,
}

impl LogReader {
    pub(crate) fn new(
        dir: PathBuf,
        codec: Codec,
        segments: Arc<RwLock<Vec<SegmentMeta>>>,
        horizon: Cursor,
        segment_bytes: u64,
    ) -> Self {
        LogReader {
            dir,
            codec,
            segments,
            horizon: Arc::new(horizon.into()),
            frames_read: Default::default(),
            segment_bytes,
        }
    }

    /// The `--segment_bytes` the log was opened with.
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    /// Frames read back from segment files since start.
    pub fn frames_read(&self) -> u64 {
        self.frames_read.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Events below this cursor may have been dropped by compaction: a resume from an
    /// earlier cursor cannot be exact.
    pub fn horizon(&self) -> Cursor {
        self.horizon.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The log's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The first cursor the oldest segment may hold.
    pub fn first_cursor(&self) -> Cursor {
        self.segments
            .read()
            .expect("segments lock")
            .first()
            .map_or(1, |s| s.first)
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> Vec<SegmentMeta> {
        self.segments.read().expect("segments lock").clone()
    }

    /// The segment files readers plan from, and their bytes on disk.
    pub fn usage(&self) -> super::DiskUsage {
        let segments = self.segments();
        super::disk_usage(segments.iter().map(|s| s.path.as_path()))
    }

    /// Swaps `replaced` (consecutive segments, by first cursor) for `compacted` in the list
    /// readers plan from, and raises the horizon. Called by compaction after the files moved.
    pub(crate) fn swap_in(&self, replaced: &[Cursor], compacted: SegmentMeta, horizon: Cursor) {
        let mut segments = self.segments.write().expect("segments lock");
        segments.retain(|s| !replaced.contains(&s.first));
        let at = segments.partition_point(|s| s.first < compacted.first);
        segments.insert(at, compacted);
        self.horizon
            .fetch_max(horizon, std::sync::atomic::Ordering::AcqRel);
    }

    /// Visits every record with `after < cursor <= upto`, in order, until `visit` returns false.
    ///
    /// Returns the cursor of the last record visited (or `after` if none).
    pub fn read_after(
        &self,
        after: Cursor,
        upto: Cursor,
        mut visit: impl FnMut(Cursor, &[u8]) -> bool,
    ) -> Result<Cursor, LogError> {
        // A compaction may swap segments between planning and reading; the swap is seen as
        // a missing file or a frame that no longer fits the old index. Plan again once,
        // from the last record visited: the new segments hold every record still needed.
        let last = std::cell::Cell::new(after);
        let stopped = std::cell::Cell::new(false);
        let mut visit_tracked = |cursor: Cursor, payload: &[u8]| {
            last.set(cursor);
            let go_on = visit(cursor, payload);
            stopped.set(!go_on);
            go_on
        };
        match self.read_once(after, upto, &mut visit_tracked) {
            Ok(reached) => Ok(reached),
            Err(LogError::Damaged { .. } | LogError::Io { .. }) if !stopped.get() => {
                self.read_once(last.get(), upto, &mut visit_tracked)
            }
            Err(e) => Err(e),
        }
    }

    fn read_once(
        &self,
        after: Cursor,
        upto: Cursor,
        visit: &mut impl FnMut(Cursor, &[u8]) -> bool,
    ) -> Result<Cursor, LogError> {
        let mut last = after;
        if upto <= after {
            return Ok(last);
        }
        let plan: Vec<(PathBuf, u64, u64)> = {
            let segments = self.segments.read().expect("segments lock");
            let start = segments
                .partition_point(|s| s.first <= after + 1)
                .saturating_sub(1);
            segments[start..]
                .iter()
                .take_while(|s| s.first <= upto)
                .enumerate()
                .map(|(i, s)| {
                    let offset = if i == 0 {
                        s.index.start_after(after)
                    } else {
                        HEADER_LEN as u64
                    };
                    let end = s.end.load(std::sync::atomic::Ordering::Acquire);
                    (s.path.clone(), offset, end)
                })
                .collect()
        };
        for (path, offset, end) in plan {
            let file = File::open(&path).map_err(|e| LogError::io(&path, e))?;
            let mut frames = FrameWalk::new(&path, file, offset, end, ZeroLength::Damage)?;
            while let Some((at, body)) = frames.next_frame()? {
                let cursor = (self.codec)(body)
                    .ok_or_else(|| damaged(&path, at, "frame holds no valid record".into()))?;
                self.frames_read
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if cursor <= after {
                    continue;
                }
                if cursor > upto {
                    return Ok(last);
                }
                last = cursor;
                if !visit(cursor, body) {
                    return Ok(last);
                }
            }
        }
        Ok(last)
    }
}

/// What a frame length of zero means to a [`FrameWalk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroLength {
    /// Damage: the walk stops before the writer's flushed end, where no zeros can be.
    Damage,
    /// The end of the records: zeros the writer reserved ahead of them (a walk of a file
    /// read without the writer's flushed end, as a checkpoint's anchor is found).
    End,
}

/// The frames of one segment file, in order from a byte offset: the one frame walk the
/// readers and the checkpoints' anchor share.
pub struct FrameWalk<'p> {
    path: &'p Path,
    file: BufReader<File>,
    /// The offset of the next frame.
    at: u64,
    /// Where the walk stops ([`CLOSED`]: the end of the file).
    end: u64,
    zero: ZeroLength,
    frame: Vec<u8>,
}

impl<'p> FrameWalk<'p> {
    /// A walk of `file` (the segment at `path`) from byte `from` up to byte `end`.
    pub fn new(
        path: &'p Path,
        file: File,
        from: u64,
        end: u64,
        zero: ZeroLength,
    ) -> Result<Self, LogError> {
        let mut file = BufReader::with_capacity(64 * 1024, file);
        file.seek(SeekFrom::Start(from))
            .map_err(|e| LogError::io(path, e))?;
        Ok(FrameWalk {
            path,
            file,
            at: from,
            end,
            zero,
            frame: Vec::new(),
        })
    }

    /// The next frame's offset and checked payload; `None` at `end`, at the end of the file,
    /// in a frame still being written (past anything a reader may ask for), or at reserved
    /// zeros ([`ZeroLength::End`]). A frame that fails its checks is [`LogError::Damaged`].
    pub fn next_frame(&mut self) -> Result<Option<(u64, &[u8])>, LogError> {
        // Past `end`: zeros written ahead of the writer, or a batch not yet flushed.
        if self.at >= self.end {
            return Ok(None);
        }
        let path = self.path;
        let mut head = [0u8; FRAME_HEADER];
        match self.file.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(LogError::io(path, e)),
        }
        let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
        if len == 0 && self.zero == ZeroLength::End {
            return Ok(None);
        }
        if len == 0 || len > frame::MAX_PAYLOAD {
            return Err(damaged(
                path,
                self.at,
                format!("impossible frame length {len}"),
            ));
        }
        self.frame.resize(FRAME_HEADER + len, 0);
        self.frame[..FRAME_HEADER].copy_from_slice(&head);
        match self.file.read_exact(&mut self.frame[FRAME_HEADER..]) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(LogError::io(path, e)),
        }
        let at = self.at;
        let (body, _) = frame::decode(&self.frame).map_err(|f| damaged(path, at, f.to_string()))?;
        self.at += (FRAME_HEADER + len) as u64;
        Ok(Some((at, body)))
    }
}

fn damaged(path: &std::path::Path, offset: u64, reason: String) -> LogError {
    LogError::Damaged {
        path: path.to_owned(),
        offset,
        reason,
    }
}
