//! `DiskLog`: an append-only log of records on disk, for the queues that must survive a crash.
//!
//! Records go to segment files (`{name}-{first seq}.seg`), each record framed as
//! `len u32 | crc32 u32 | seq u64 | written_at_ns u64 | data`, the checksum covering seq,
//! time and data. One writer thread owns the files: it takes every append waiting, writes them,
//! calls `fsync` once and only then answers them all (group commit), so a thousand concurrent
//! requests cost one `fsync`, not a thousand.
//!
//! A record is acknowledged (`ack`) once its consumer is done with it; acknowledgements are
//! appended, unsynced, to the segment's `.acks` file, and a segment whose records are all
//! acknowledged is deleted. After a crash, `open` returns the records not acknowledged: a record
//! whose acknowledgement was written but not yet on disk (power loss, not `kill -9`, which keeps
//! what the kernel has) is delivered again, so delivery is at least once. A torn or corrupt tail
//! (the crash hit mid-write) is detected by its checksum, cut off and counted; it never stops
//! the start.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use bytes::Bytes;
use tokio::sync::oneshot;

pub use crate::shared::SyncPolicy;

/// Bytes of a record's frame before its data.
const HEADER: usize = 4 + 4 + 8 + 8;
/// A record larger than this is corrupt (the queues never write one).
const MAX_RECORD: usize = 1 << 30;

#[derive(Debug, thiserror::Error, Clone)]
pub enum DiskError {
    #[error("{path}: {cause}")]
    Io { path: String, cause: String },
    #[error("the disk log {0} is closed")]
    Closed(String),
}

impl DiskError {
    fn io(path: &Path, error: io::Error) -> DiskError {
        DiskError::Io { path: path.display().to_string(), cause: error.to_string() }
    }
}

/// A record found at start that was never acknowledged.
pub struct Recovered {
    pub seq: u64,
    pub written_at_ns: u64,
    pub data: Bytes,
}

/// What `open` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub records: usize,
    pub bytes: u64,
    /// Torn or corrupt record tails cut off.
    pub torn: usize,
    /// Segments deleted because every record in them was acknowledged.
    pub removed_segments: usize,
}

enum Command {
    Append {
        data: Bytes,
        done: oneshot::Sender<Result<u64, DiskError>>,
    },
    Ack(u64),
    /// Answered once everything before it is written and acknowledgements are flushed.
    Flush(oneshot::Sender<()>),
}

/// The handle; cheap to clone.
#[derive(Clone)]
pub struct DiskLog {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    tx: std::sync::Mutex<Option<mpsc::Sender<Command>>>,
    /// Bytes of records written and not acknowledged.
    live_bytes: AtomicU64,
}

struct Segment {
    path: PathBuf,
    acks_path: PathBuf,
    /// Sizes of its records not yet acknowledged.
    pending: BTreeMap<u64, u64>,
    acks: Option<BufWriter<File>>,
}

struct Writer {
    dir: PathBuf,
    name: String,
    sync: SyncPolicy,
    segment_bytes: u64,
    next_seq: u64,
    /// Segments by first seq; the last one is being written.
    segments: BTreeMap<u64, Segment>,
    active: Option<(u64, BufWriter<File>, u64)>,
    shared: Arc<Shared>,
}

impl DiskLog {
    /// Opens (creating) the log `name` in `dir` and returns the records not yet acknowledged, in
    /// the order they were written.
    pub fn open(
        dir: &Path,
        name: &str,
        sync: SyncPolicy,
        segment_bytes: u64,
    ) -> Result<(DiskLog, Vec<Recovered>, RecoveryReport), DiskError> {
        fs::create_dir_all(dir).map_err(|e| DiskError::io(dir, e))?;
        let shared = Arc::new(Shared { dir: dir.to_path_buf(), tx: std::sync::Mutex::new(None), live_bytes: AtomicU64::new(0) });
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            sync,
            segment_bytes: segment_bytes.max(4096),
            next_seq: 0,
            segments: BTreeMap::new(),
            active: None,
            shared: shared.clone(),
        };
        let (recovered, report) = writer.recover()?;
        let (tx, rx) = mpsc::channel();
        *shared.tx.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        std::thread::Builder::new().name(format!("disklog-{name}")).spawn(move || writer.run(rx)).map_err(|e| DiskError::io(dir, e))?;
        Ok((DiskLog { shared }, recovered, report))
    }

    /// Appends a record; resolves to its sequence number once it is written (and synced, by
    /// the policy).
    pub fn append(&self, data: Bytes) -> impl std::future::Future<Output = Result<u64, DiskError>> + Send + 'static {
        let (done, rx) = oneshot::channel();
        let sent = self.send(Command::Append { data, done });
        let dir = self.shared.dir.display().to_string();
        async move {
            sent?;
            rx.await.map_err(|_| DiskError::Closed(dir))?
        }
    }

    /// Marks a record as consumed; its segment goes once all of its records are.
    pub fn ack(&self, seq: u64) {
        let _ = self.send(Command::Ack(seq));
    }

    /// Waits until every command sent so far is done (acknowledgements written).
    pub async fn flush(&self) {
        let (done, rx) = oneshot::channel();
        if self.send(Command::Flush(done)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Bytes of records written and not acknowledged.
    pub fn live_bytes(&self) -> u64 {
        self.shared.live_bytes.load(Ordering::Relaxed)
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Stops the writer once it has done what was sent before.
    pub fn close(&self) {
        self.shared.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn send(&self, command: Command) -> Result<(), DiskError> {
        let guard = self.shared.tx.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(tx) => tx.send(command).map_err(|_| DiskError::Closed(self.shared.dir.display().to_string())),
            None => Err(DiskError::Closed(self.shared.dir.display().to_string())),
        }
    }
}

impl Writer {
    fn segment_paths(&self, first: u64) -> (PathBuf, PathBuf) {
        (self.dir.join(format!("{}-{first:020}.seg", self.name)), self.dir.join(format!("{}-{first:020}.acks", self.name)))
    }

    fn recover(&mut self) -> Result<(Vec<Recovered>, RecoveryReport), DiskError> {
        let mut report = RecoveryReport::default();
        let prefix = format!("{}-", self.name);
        let mut firsts = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| DiskError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| DiskError::io(&self.dir, e))?;
            let file = entry.file_name();
            let Some(file) = file.to_str() else { continue };
            if let Some(first) = file.strip_prefix(&prefix).and_then(|f| f.strip_suffix(".seg")).and_then(|n| n.parse::<u64>().ok()) {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut out = Vec::new();
        for first in firsts {
            let (path, acks_path) = self.segment_paths(first);
            let acked = read_acks(&acks_path);
            let (records, valid_len, torn) = read_segment(&path)?;
            if torn {
                report.torn += 1;
                tracing::warn!(file = %path.display(), valid_bytes = valid_len, "torn or corrupt record at the end of a queue segment (the process stopped mid-write); cut off");
                let file = OpenOptions::new().write(true).open(&path).map_err(|e| DiskError::io(&path, e))?;
                file.set_len(valid_len).map_err(|e| DiskError::io(&path, e))?;
                file.sync_all().map_err(|e| DiskError::io(&path, e))?;
            }
            let mut pending = BTreeMap::new();
            for r in records {
                self.next_seq = self.next_seq.max(r.seq + 1);
                if acked.contains(&r.seq) {
                    continue;
                }
                let size = (HEADER + r.data.len()) as u64;
                pending.insert(r.seq, size);
                report.records += 1;
                report.bytes += size;
                out.push(r);
            }
            if pending.is_empty() {
                let _ = fs::remove_file(&path);
                let _ = fs::remove_file(&acks_path);
                report.removed_segments += 1;
                continue;
            }
            let acks = OpenOptions::new().create(true).append(true).open(&acks_path).map_err(|e| DiskError::io(&acks_path, e))?;
            self.segments.insert(first, Segment { path, acks_path, pending, acks: Some(BufWriter::new(acks)) });
        }
        out.sort_by_key(|r| r.seq);
        self.shared.live_bytes.store(report.bytes, Ordering::Relaxed);
        Ok((out, report))
    }

    fn run(mut self, rx: mpsc::Receiver<Command>) {
        while let Ok(first) = rx.recv() {
            let mut commands = vec![first];
            while let Ok(more) = rx.try_recv() {
                commands.push(more);
                if commands.len() >= 4096 {
                    break;
                }
            }
            self.handle(commands);
        }
        // Closed: what was written stays; flush the acknowledgements.
        self.flush_acks();
        if let Some((_, mut file, _)) = self.active.take() {
            let _ = file.flush();
            let _ = file.get_ref().sync_all();
        }
    }

    fn handle(&mut self, commands: Vec<Command>) {
        let mut appended: Vec<(u64, oneshot::Sender<Result<u64, DiskError>>)> = Vec::new();
        let mut flushes = Vec::new();
        let mut acks = Vec::new();
        let mut failure: Option<DiskError> = None;
        for command in commands {
            match command {
                Command::Append { data, done } => {
                    if let Some(error) = &failure {
                        let _ = done.send(Err(error.clone()));
                        continue;
                    }
                    match self.write(&data) {
                        Ok(seq) => appended.push((seq, done)),
                        Err(error) => {
                            let _ = done.send(Err(error.clone()));
                            failure = Some(error);
                        }
                    }
                }
                Command::Ack(seq) => acks.push(seq),
                Command::Flush(done) => flushes.push(done),
            }
        }
        // One flush (and fsync) for every append of the group.
        let synced = if appended.is_empty() { Ok(()) } else { self.sync_active() };
        match &synced {
            Ok(()) => {
                for (seq, done) in appended {
                    let _ = done.send(Ok(seq));
                }
            }
            Err(error) => {
                // Not durable: refused, and cancelled on disk so that a restart does not send
                // what the client was told failed (it retries).
                for (seq, done) in appended {
                    acks.push(seq);
                    let _ = done.send(Err(error.clone()));
                }
            }
        }
        if let Some(error) = failure.as_ref().or(synced.as_ref().err()) {
            tracing::error!(%error, "queue log write failed; the requests are refused");
            self.abandon_active();
        }
        // Acknowledgements reach the kernel at once (one write per group, no fsync): a process
        // killed now re-sends only batches in flight, not everything since its last flush.
        let acked = !acks.is_empty();
        for seq in acks {
            self.ack(seq);
        }
        if acked || !flushes.is_empty() {
            self.flush_acks();
        }
        for done in flushes {
            let _ = done.send(());
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<u64, DiskError> {
        if self.active.as_ref().is_some_and(|(_, _, size)| *size >= self.segment_bytes) {
            self.roll()?;
        }
        if self.active.is_none() {
            let first = self.next_seq;
            let (path, acks_path) = self.segment_paths(first);
            let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| DiskError::io(&path, e))?;
            // The new file's name must survive a crash too.
            if self.sync == SyncPolicy::Always {
                if let Ok(dir) = File::open(&self.dir) {
                    let _ = dir.sync_all();
                }
            }
            self.segments.insert(first, Segment { path, acks_path, pending: BTreeMap::new(), acks: None });
            self.active = Some((first, BufWriter::with_capacity(256 * 1024, file), 0));
        }
        let seq = self.next_seq;
        let written_at = crate::shared::now_unix_nanos();
        let mut header = [0u8; HEADER];
        header[0..4].copy_from_slice(&(data.len() as u32).to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&seq.to_le_bytes());
        crc.update(&written_at.to_le_bytes());
        crc.update(data);
        header[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        header[8..16].copy_from_slice(&seq.to_le_bytes());
        header[16..24].copy_from_slice(&written_at.to_le_bytes());
        let Some((first, file, size)) = self.active.as_mut() else {
            return Err(DiskError::Closed(self.dir.display().to_string()));
        };
        let path = self.segments.get(first).map(|s| s.path.clone()).unwrap_or_default();
        file.write_all(&header).and_then(|_| file.write_all(data)).map_err(|e| DiskError::io(&path, e))?;
        let record = (HEADER + data.len()) as u64;
        *size += record;
        if let Some(segment) = self.segments.get_mut(first) {
            segment.pending.insert(seq, record);
        }
        self.next_seq += 1;
        self.shared.live_bytes.fetch_add(record, Ordering::Relaxed);
        Ok(seq)
    }

    fn sync_active(&mut self) -> Result<(), DiskError> {
        let Some((first, file, _)) = self.active.as_mut() else { return Ok(()) };
        let path = self.segments.get(first).map(|s| s.path.clone()).unwrap_or_default();
        file.flush().map_err(|e| DiskError::io(&path, e))?;
        if self.sync == SyncPolicy::Always {
            file.get_ref().sync_data().map_err(|e| DiskError::io(&path, e))?;
        }
        Ok(())
    }

    /// After a failed write the active segment may end in a partial record: nothing more is
    /// appended to it (a restart cuts the torn tail off without losing a record after it), its
    /// acknowledged records stay until delivered, and new records go to a fresh segment.
    fn abandon_active(&mut self) {
        if let Some((first, file, _)) = self.active.take() {
            // Dropping the writer may flush a last part of its buffer; records in it were
            // refused and are cancelled in the acks file.
            drop(file);
            self.remove_if_done(first);
        }
    }

    fn roll(&mut self) -> Result<(), DiskError> {
        if let Some((first, mut file, _)) = self.active.take() {
            let path = self.segments.get(&first).map(|s| s.path.clone()).unwrap_or_default();
            file.flush().map_err(|e| DiskError::io(&path, e))?;
            file.get_ref().sync_data().map_err(|e| DiskError::io(&path, e))?;
            self.remove_if_done(first);
        }
        Ok(())
    }

    fn ack(&mut self, seq: u64) {
        let Some((&first, segment)) = self.segments.range_mut(..=seq).next_back() else { return };
        let Some(size) = segment.pending.remove(&seq) else { return };
        self.shared.live_bytes.fetch_sub(size.min(self.shared.live_bytes.load(Ordering::Relaxed)), Ordering::Relaxed);
        if segment.acks.is_none() {
            match OpenOptions::new().create(true).append(true).open(&segment.acks_path) {
                Ok(file) => segment.acks = Some(BufWriter::new(file)),
                Err(error) => {
                    tracing::warn!(%error, file = %segment.acks_path.display(), "cannot record a delivered batch; it may be sent again after a restart")
                }
            }
        }
        if let Some(acks) = segment.acks.as_mut() {
            let _ = acks.write_all(&seq.to_le_bytes());
        }
        self.remove_if_done(first);
    }

    /// Deletes a segment that is not being written and has nothing pending.
    fn remove_if_done(&mut self, first: u64) {
        if self.active.as_ref().is_some_and(|(a, _, _)| *a == first) {
            return;
        }
        if self.segments.get(&first).is_some_and(|s| s.pending.is_empty()) {
            if let Some(segment) = self.segments.remove(&first) {
                drop(segment.acks);
                let _ = fs::remove_file(&segment.path);
                let _ = fs::remove_file(&segment.acks_path);
            }
        }
    }

    fn flush_acks(&mut self) {
        for segment in self.segments.values_mut() {
            if let Some(acks) = segment.acks.as_mut() {
                let _ = acks.flush();
            }
        }
        // The active segment fully acknowledged: start a new one so this one can go.
        if let Some((first, _, size)) = &self.active {
            let first = *first;
            if *size >= self.segment_bytes / 4 && self.segments.get(&first).is_some_and(|s| s.pending.is_empty()) {
                let _ = self.roll();
            }
        }
    }
}

fn read_acks(path: &Path) -> HashSet<u64> {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_end(&mut bytes);
    }
    bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()
}

/// The records of a segment up to the first bad one, the length of the good part, and whether
/// anything followed it.
fn read_segment(path: &Path) -> Result<(Vec<Recovered>, u64, bool), DiskError> {
    let bytes = fs::read(path).map_err(|e| DiskError::io(path, e))?;
    let bytes = Bytes::from(bytes);
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        if bytes.len() - at < HEADER {
            return Ok((records, at as u64, true));
        }
        let h = &bytes[at..at + HEADER];
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let seq = u64::from_le_bytes(h[8..16].try_into().unwrap_or([0; 8]));
        let written_at_ns = u64::from_le_bytes(h[16..24].try_into().unwrap_or([0; 8]));
        if len > MAX_RECORD || bytes.len() - at - HEADER < len {
            return Ok((records, at as u64, true));
        }
        let data = bytes.slice(at + HEADER..at + HEADER + len);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&h[8..16]);
        hasher.update(&h[16..24]);
        hasher.update(&data);
        if hasher.finalize() != crc {
            return Ok((records, at as u64, true));
        }
        records.push(Recovered { seq, written_at_ns, data });
        at += HEADER + len;
    }
    Ok((records, at as u64, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> (DiskLog, Vec<Recovered>, RecoveryReport) {
        DiskLog::open(dir, "q", SyncPolicy::Always, 4096).unwrap()
    }

    #[tokio::test]
    async fn unacknowledged_records_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (log, recovered, _) = open(dir.path());
        assert!(recovered.is_empty());
        let mut seqs = Vec::new();
        for i in 0..100u32 {
            seqs.push(log.append(Bytes::from(vec![i as u8; 100])).await.unwrap());
        }
        for seq in &seqs[..60] {
            log.ack(*seq);
        }
        log.flush().await;
        log.close();
        drop(log);
        // Give the writer thread a moment to exit and release its files.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (_log, recovered, report) = open(dir.path());
        assert_eq!(recovered.iter().map(|r| r.seq).collect::<Vec<_>>(), seqs[60..].to_vec());
        assert_eq!(recovered[0].data[0], 60);
        assert_eq!(report.records, 40);
        assert_eq!(report.torn, 0);
        assert!(report.removed_segments > 0 || fs::read_dir(dir.path()).unwrap().count() < 10, "fully delivered segments are deleted");
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_off_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _, _) = open(dir.path());
        for i in 0..3u8 {
            log.append(Bytes::from(vec![i; 50])).await.unwrap();
        }
        log.close();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let segment =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "seg")).unwrap();
        // Half a record at the end, as a crash mid-write leaves it; then flip a byte of the last whole record.
        let mut bytes = fs::read(&segment).unwrap();
        let whole = bytes.len();
        bytes.extend_from_slice(&[7u8; 30]);
        fs::write(&segment, &bytes).unwrap();
        let (log, recovered, report) = open(dir.path());
        assert_eq!((recovered.len(), report.torn), (3, 1));
        assert_eq!(fs::metadata(&segment).unwrap().len() as usize, whole, "the torn tail was truncated");
        log.close();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut bytes = fs::read(&segment).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&segment, &bytes).unwrap();
        let (log, recovered, report) = open(dir.path());
        assert_eq!((recovered.len(), report.torn), (2, 1), "a record with a bad checksum is not delivered");
        // New records continue after the highest sequence number seen.
        let seq = log.append(Bytes::from_static(b"next")).await.unwrap();
        assert_eq!(seq, 2, "numbering continues after the last good record");
    }

    #[tokio::test]
    async fn concurrent_appends_share_fsyncs_and_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _, _) = DiskLog::open(dir.path(), "q", SyncPolicy::Always, 1 << 20).unwrap();
        let tasks: Vec<_> = (0..200).map(|i: u32| tokio::spawn(log.append(Bytes::from(i.to_le_bytes().to_vec())))).collect();
        let mut seqs = HashSet::new();
        for t in tasks {
            assert!(seqs.insert(t.await.unwrap().unwrap()));
        }
        assert_eq!(seqs.len(), 200);
        assert_eq!(log.live_bytes(), 200 * (HEADER as u64 + 4));
    }

    #[tokio::test]
    async fn an_unwritable_directory_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"x").unwrap();
        let error = DiskLog::open(&file, "q", SyncPolicy::Always, 4096).err().unwrap();
        assert!(error.to_string().contains("not-a-dir"), "{error}");
    }
}
