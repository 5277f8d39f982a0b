//! Reading a directory tree into a tree stream: one thread lists directories in the stream's
//! order, a few reader threads stat and read entries in parallel, and the encoder takes their
//! results back in that order, so the bytes are deterministic while the reads overlap.
//!
//! Memory stays bounded whatever the tree's size: at most [`WINDOW`] entries are in flight,
//! file data read ahead is capped by [`READ_AHEAD_BYTES`] (a file that does not fit is read by
//! the encoder itself, block by block), and only the open directories' sorted names are held.

use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use super::tree::{self, Entry, Extent, Kind, Meta, Totals};

/// Entries listed ahead of the encoder.
pub const WINDOW: usize = 1024;
/// File data read ahead of the encoder, at most.
pub const READ_AHEAD_BYTES: u64 = 32 * 1024 * 1024;
/// A block handed to the repository writer is at least this big.
pub const BLOCK: usize = 1024 * 1024;

/// What the reader threads were told about a name from its directory listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hint {
    Root,
    Directory,
    File,
    Other,
}

struct Job {
    absolute: PathBuf,
    relative: Vec<u8>,
    hint: Hint,
    done: SyncSender<Result<Scanned, WalkError>>,
}

/// File data as a reader thread left it for the encoder.
enum Content {
    None,
    Read(Vec<u8>),
    /// Too big for the read-ahead budget: the encoder reads it.
    Open(File),
}

struct Scanned {
    entry: Entry,
    content: Content,
    /// (device, inode) of a regular file with more than one link.
    link_key: Option<(u64, u64)>,
}

/// Why reading the tree failed.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// A file system call failed on a path.
    #[error("{path}: {source}")]
    Io {
        /// The path, as the source directory names it.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The repository side stopped taking data.
    #[error("the repository writer stopped: {0}")]
    Stopped(String),
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> WalkError + '_ {
    move |source| WalkError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Counts of what the stream holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TreeCounts {
    /// Regular files (first links).
    pub files: u64,
    /// Directories, the root included.
    pub directories: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Second and later names of a file.
    pub hardlinks: u64,
    /// FIFOs and devices.
    pub special: u64,
    /// Sum of the regular files' sizes.
    pub file_bytes: u64,
    /// File data actually recorded (holes left out).
    pub data_bytes: u64,
    /// Files with holes.
    pub sparse_files: u64,
}

/// Shared cap on file data read ahead; a reader that cannot take its share leaves the file
/// open for the encoder instead of waiting, so the pipeline never deadlocks.
struct Budget {
    used: Mutex<u64>,
}

impl Budget {
    fn try_take(&self, bytes: u64) -> bool {
        let Ok(mut used) = self.used.lock() else {
            return false;
        };
        if *used + bytes > READ_AHEAD_BYTES {
            return false;
        }
        *used += bytes;
        true
    }

    fn give_back(&self, bytes: u64) {
        if let Ok(mut used) = self.used.lock() {
            *used = used.saturating_sub(bytes);
        }
    }
}

/// A directory's names with their listed types, sorted by name bytes (the stream's order).
fn sorted_listing(dir: &Path) -> Result<Vec<(OsString, Hint)>, WalkError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        let file_type = entry.file_type().map_err(io_at(&entry.path()))?;
        let hint = if file_type.is_dir() {
            Hint::Directory
        } else if file_type.is_file() {
            Hint::File
        } else {
            Hint::Other
        };
        names.push((entry.file_name(), hint));
    }
    names.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(names)
}

/// A directory being listed: its path, its path in the stream, the names still to send.
type OpenDirectory = (PathBuf, Vec<u8>, std::vec::IntoIter<(OsString, Hint)>);

/// The listing thread: sends every entry, depth first in name order, to the readers and its
/// result slot to the encoder.
fn list(
    root: PathBuf,
    jobs: Arc<Mutex<std::sync::mpsc::Sender<Job>>>,
    order: SyncSender<Receiver<Result<Scanned, WalkError>>>,
) {
    let submit = |absolute: PathBuf, relative: Vec<u8>, hint: Hint| -> bool {
        let (done, result) = sync_channel(1);
        let job = Job {
            absolute,
            relative,
            hint,
            done,
        };
        let sent = jobs.lock().map(|jobs| jobs.send(job).is_ok());
        sent.unwrap_or(false) && order.send(result).is_ok()
    };
    let fail = |err: WalkError| {
        let (done, result) = sync_channel(1);
        let _ = done.send(Err(err));
        let _ = order.send(result);
    };
    if !submit(root.clone(), Vec::new(), Hint::Root) {
        return;
    }
    let mut open: Vec<OpenDirectory> = match sorted_listing(&root) {
        Ok(names) => vec![(root, Vec::new(), names.into_iter())],
        Err(err) => return fail(err),
    };
    while let Some((dir, relative, names)) = open.last_mut() {
        let Some((name, hint)) = names.next() else {
            open.pop();
            continue;
        };
        let absolute = dir.join(&name);
        let mut child = relative.clone();
        if !child.is_empty() {
            child.push(b'/');
        }
        child.extend_from_slice(name.as_bytes());
        if !submit(absolute.clone(), child.clone(), hint) {
            return;
        }
        if hint == Hint::Directory {
            match sorted_listing(&absolute) {
                Ok(names) => open.push((absolute, child, names.into_iter())),
                Err(err) => return fail(err),
            }
        }
    }
}

fn c_path(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)
}

/// Where the calls on extended attributes look: an open file, or a path without following
/// a final symlink.
enum XattrTarget<'a> {
    Fd(i32),
    Path(&'a CString),
}

fn unsupported(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ENOTSUP) | Some(libc::ENODATA) | Some(libc::EPERM) | Some(libc::EACCES)
    )
}

/// Extended attributes, sorted by name; none where the file system has none or refuses.
fn read_xattrs(target: XattrTarget<'_>) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let list = |buffer: &mut [u8]| -> isize {
        let (ptr, len) = (buffer.as_mut_ptr().cast::<libc::c_char>(), buffer.len());
        // SAFETY: the buffer is valid for `len` bytes; a zero length only asks for the size.
        unsafe {
            match &target {
                XattrTarget::Fd(fd) => libc::flistxattr(*fd, ptr, len),
                XattrTarget::Path(path) => libc::llistxattr(path.as_ptr(), ptr, len),
            }
        }
    };
    let get = |name: &CString, buffer: &mut [u8]| -> isize {
        let (ptr, len) = (buffer.as_mut_ptr().cast::<libc::c_void>(), buffer.len());
        // SAFETY: as above; `name` is NUL-terminated.
        unsafe {
            match &target {
                XattrTarget::Fd(fd) => libc::fgetxattr(*fd, name.as_ptr(), ptr, len),
                XattrTarget::Path(path) => libc::lgetxattr(path.as_ptr(), name.as_ptr(), ptr, len),
            }
        }
    };
    let mut names = vec![0u8; 256];
    let listed = loop {
        let got = list(&mut names);
        if got >= 0 {
            break got as usize;
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => {
                let needed = list(&mut []);
                names.resize(needed.max(names.len() as isize * 2) as usize, 0);
            }
            _ if unsupported(&err) => return Ok(Vec::new()),
            _ => return Err(err),
        }
    };
    let mut xattrs = Vec::new();
    for name in names[..listed].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let c_name = CString::new(name).map_err(std::io::Error::other)?;
        let mut value = vec![0u8; 256];
        loop {
            let got = get(&c_name, &mut value);
            if got >= 0 {
                value.truncate(got as usize);
                xattrs.push((name.to_vec(), value));
                break;
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ERANGE) => {
                    let needed = get(&c_name, &mut []);
                    value.resize(needed.max(value.len() as isize * 2) as usize, 0);
                }
                // Removed meanwhile, or one we may list but not read: leave it out.
                _ if unsupported(&err) => break,
                _ => return Err(err),
            }
        }
    }
    xattrs.sort();
    Ok(xattrs)
}

fn meta_of(stat: &std::fs::Metadata, xattrs: Vec<(Vec<u8>, Vec<u8>)>) -> Meta {
    Meta {
        mode: stat.mode() & 0o7777,
        uid: stat.uid(),
        gid: stat.gid(),
        mtime_sec: stat.mtime(),
        mtime_nsec: stat.mtime_nsec().clamp(0, 999_999_999) as u32,
        xattrs,
    }
}

/// Linux's split of a device number.
pub fn major_minor(rdev: u64) -> (u64, u64) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major, minor)
}

/// Data runs of an open file: one run unless the file occupies fewer blocks than its size
/// (only then can it have holes), in which case SEEK_DATA/SEEK_HOLE map them.
fn data_extents(file: &File, stat: &std::fs::Metadata) -> std::io::Result<Vec<Extent>> {
    let size = stat.size();
    if size == 0 {
        return Ok(Vec::new());
    }
    if stat.blocks().saturating_mul(512) >= size {
        return Ok(vec![Extent {
            offset: 0,
            length: size,
        }]);
    }
    let fd = file.as_raw_fd();
    let seek = |offset: u64, whence: i32| -> std::io::Result<Option<u64>> {
        // SAFETY: lseek on a descriptor we own; it only moves the file offset.
        let at = unsafe { libc::lseek(fd, offset as libc::off_t, whence) };
        if at >= 0 {
            return Ok(Some(at as u64));
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(err),
        }
    };
    let mut extents = Vec::new();
    let mut at = 0u64;
    while at < size {
        let start = match seek(at, libc::SEEK_DATA) {
            Ok(Some(start)) if start < size => start,
            Ok(_) => break,
            // A file system without SEEK_DATA: read it all (holes come back as zeros).
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                return Ok(vec![Extent {
                    offset: 0,
                    length: size,
                }]);
            }
            Err(err) => return Err(err),
        };
        let end = seek(start, libc::SEEK_HOLE)?.unwrap_or(size).min(size);
        extents.push(Extent {
            offset: start,
            length: end - start,
        });
        at = end;
    }
    Ok(merge_extents(extents))
}

/// Joins runs that touch (some file systems report one run in pieces).
pub fn merge_extents(extents: Vec<Extent>) -> Vec<Extent> {
    let mut merged: Vec<Extent> = Vec::with_capacity(extents.len());
    for extent in extents.into_iter().filter(|e| e.length > 0) {
        match merged.last_mut() {
            Some(last) if last.offset + last.length == extent.offset => {
                last.length += extent.length;
            }
            _ => merged.push(extent),
        }
    }
    merged
}

static NOATIME_REFUSED: AtomicBool = AtomicBool::new(false);

/// Opens a file for reading without following a symlink and, where allowed, without
/// touching its access time.
fn open_for_reading(path: &CString) -> std::io::Result<File> {
    // O_NONBLOCK: a FIFO put where a file was listed must not hang the backup.
    let flags =
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;
    if !NOATIME_REFUSED.load(Ordering::Relaxed) {
        // SAFETY: a NUL-terminated path; the descriptor is owned by the File below.
        let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_NOATIME) };
        if fd >= 0 {
            // SAFETY: `fd` was just opened and is owned by nobody else.
            return Ok(unsafe { File::from_raw_fd(fd) });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EPERM) {
            return Err(err);
        }
        NOATIME_REFUSED.store(true, Ordering::Relaxed);
    }
    // SAFETY: as above.
    let fd = unsafe { libc::open(path.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Reads `extents` of `file` into one buffer, back to back.
fn read_extents(file: &File, extents: &[Extent], out: &mut Vec<u8>) -> std::io::Result<()> {
    for extent in extents {
        let start = out.len();
        out.resize(start + extent.length as usize, 0);
        file.read_exact_at(&mut out[start..], extent.offset)
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::UnexpectedEof => std::io::Error::other(
                    "the file shrank while it was read: back up a snapshot, not a live volume",
                ),
                _ => err,
            })?;
    }
    Ok(())
}

/// One entry's metadata and, for a small file, its data.
fn scan(job: &Job, budget: &Budget) -> Result<Scanned, WalkError> {
    let at = io_at(&job.absolute);
    let path = c_path(&job.absolute).map_err(io_at(&job.absolute))?;
    if job.hint == Hint::File {
        let file = open_for_reading(&path).map_err(io_at(&job.absolute))?;
        let stat = file.metadata().map_err(io_at(&job.absolute))?;
        if stat.file_type().is_file() {
            let xattrs =
                read_xattrs(XattrTarget::Fd(file.as_raw_fd())).map_err(io_at(&job.absolute))?;
            let extents = data_extents(&file, &stat).map_err(io_at(&job.absolute))?;
            let data_len: u64 = extents.iter().map(|e| e.length).sum();
            let content = if data_len == 0 {
                Content::None
            } else if budget.try_take(data_len) {
                let mut data = Vec::with_capacity(data_len as usize);
                match read_extents(&file, &extents, &mut data) {
                    Ok(()) => Content::Read(data),
                    Err(err) => {
                        budget.give_back(data_len);
                        return Err(at(err));
                    }
                }
            } else {
                Content::Open(file)
            };
            return Ok(Scanned {
                link_key: (stat.nlink() > 1).then(|| (stat.dev(), stat.ino())),
                entry: Entry {
                    path: job.relative.clone(),
                    meta: meta_of(&stat, xattrs),
                    kind: Kind::File {
                        size: stat.size(),
                        extents,
                    },
                },
                content,
            });
        }
        // Replaced by something else since it was listed: record what is there now.
    }
    let stat = if job.hint == Hint::Root {
        std::fs::metadata(&job.absolute)
    } else {
        std::fs::symlink_metadata(&job.absolute)
    }
    .map_err(io_at(&job.absolute))?;
    let xattrs = read_xattrs(XattrTarget::Path(&path)).map_err(io_at(&job.absolute))?;
    let file_type = stat.file_type();
    use std::os::unix::fs::FileTypeExt;
    let kind = if file_type.is_dir() {
        Kind::Directory
    } else if file_type.is_symlink() {
        Kind::Symlink {
            target: std::fs::read_link(&job.absolute)
                .map_err(io_at(&job.absolute))?
                .into_os_string()
                .into_vec(),
        }
    } else if file_type.is_fifo() {
        Kind::Fifo
    } else if file_type.is_char_device() || file_type.is_block_device() {
        let (major, minor) = major_minor(stat.rdev());
        if file_type.is_char_device() {
            Kind::CharDevice { major, minor }
        } else {
            Kind::BlockDevice { major, minor }
        }
    } else if file_type.is_file() {
        // Listed as something else, a file now: read it as one.
        return scan(
            &Job {
                absolute: job.absolute.clone(),
                relative: job.relative.clone(),
                hint: Hint::File,
                done: job.done.clone(),
            },
            budget,
        );
    } else {
        return Err(at(std::io::Error::other(
            "a socket or unknown file type cannot be backed up",
        )));
    };
    if job.hint == Hint::Root && kind != Kind::Directory {
        return Err(at(std::io::Error::other("the source is not a directory")));
    }
    if job.hint == Hint::Directory && kind != Kind::Directory {
        return Err(at(std::io::Error::other(
            "was a directory when listed and is not now: back up a snapshot, not a live volume",
        )));
    }
    Ok(Scanned {
        entry: Entry {
            path: job.relative.clone(),
            meta: meta_of(&stat, xattrs),
            kind,
        },
        content: Content::None,
        link_key: None,
    })
}

/// Encoded stream bytes with the offsets in them where the writer should end a chunk.
#[derive(Debug, Default)]
pub struct Block {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Offsets into `bytes`, ascending (see [`tree::cut_before`]).
    pub cuts: Vec<usize>,
}

impl Block {
    fn cut(&mut self) {
        let at = self.bytes.len();
        if self.cuts.last() != Some(&at) {
            self.cuts.push(at);
        }
    }
}

/// Hands a full block on and starts the next in a reused buffer when one comes back.
fn flush(
    out: &mut Block,
    emit: &mut impl FnMut(Block) -> Result<Option<Vec<u8>>, WalkError>,
) -> Result<(), WalkError> {
    let full = std::mem::take(out);
    out.bytes = emit(full)?.unwrap_or_default();
    out.bytes.clear();
    Ok(())
}

/// Reads the tree under `root` and hands the encoded stream, in blocks of at least [`BLOCK`]
/// bytes, to `emit` (which returns the block's buffer for reuse when it can). `readers`
/// threads stat and read entries in parallel.
pub fn encode_tree(
    root: &Path,
    readers: usize,
    mut emit: impl FnMut(Block) -> Result<Option<Vec<u8>>, WalkError>,
) -> Result<TreeCounts, WalkError> {
    let (jobs_tx, jobs_rx) = std::sync::mpsc::channel::<Job>();
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    let (order_tx, order_rx) = sync_channel(WINDOW);
    let budget = Arc::new(Budget {
        used: Mutex::new(0),
    });
    let mut threads = Vec::new();
    for _ in 0..readers.max(1) {
        let jobs_rx = jobs_rx.clone();
        let budget = budget.clone();
        threads.push(std::thread::spawn(move || {
            loop {
                let job = match jobs_rx.lock() {
                    Ok(jobs) => match jobs.recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    },
                    Err(_) => return,
                };
                let result = scan(&job, &budget);
                if job.done.send(result).is_err() {
                    return;
                }
            }
        }));
    }
    let root_path = root.to_path_buf();
    let jobs = Arc::new(Mutex::new(jobs_tx));
    threads.push(std::thread::spawn(move || list(root_path, jobs, order_tx)));

    let mut counts = TreeCounts::default();
    let mut totals = Totals::default();
    let mut out = Block {
        bytes: Vec::with_capacity(2 * BLOCK),
        cuts: Vec::new(),
    };
    tree::encode_start(&mut out.bytes);
    let mut after_own_chunks = false;
    let mut first_links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let result = (|| {
        for slot in order_rx.iter() {
            let scanned = slot
                .recv()
                .map_err(|_| WalkError::Stopped("a reader thread ended".into()))??;
            let Scanned {
                mut entry,
                content,
                link_key,
            } = scanned;
            let mut content = Some(content);
            if let Some(key) = link_key {
                match first_links.get(&key) {
                    Some(first) => {
                        if let Some(Content::Read(data)) = content.take() {
                            budget.give_back(data.len() as u64);
                        }
                        entry.kind = Kind::Hardlink {
                            target: first.clone(),
                        };
                    }
                    None => {
                        first_links.insert(key, entry.path.clone());
                    }
                }
            }
            match &entry.kind {
                Kind::Directory => counts.directories += 1,
                Kind::File { size, extents } => {
                    counts.files += 1;
                    counts.file_bytes += size;
                    if extents.iter().map(|e| e.length).sum::<u64>() < *size {
                        counts.sparse_files += 1;
                    }
                }
                Kind::Symlink { .. } => counts.symlinks += 1,
                Kind::Hardlink { .. } => counts.hardlinks += 1,
                Kind::Fifo | Kind::CharDevice { .. } | Kind::BlockDevice { .. } => {
                    counts.special += 1
                }
            }
            let data_len = entry.data_len();
            if tree::cut_before(&entry.path, data_len, after_own_chunks) {
                out.cut();
            }
            after_own_chunks = data_len >= tree::OWN_CHUNKS_FROM;
            tree::encode_entry(&mut out.bytes, &entry);
            totals.entries += 1;
            totals.data_bytes += data_len;
            match content {
                Some(Content::Read(data)) => {
                    out.bytes.extend_from_slice(&data);
                    budget.give_back(data.len() as u64);
                }
                Some(Content::Open(file)) => {
                    let Kind::File { extents, .. } = &entry.kind else {
                        unreachable!("only files are left open")
                    };
                    stream_extents(&file, extents, &mut out, &mut emit).map_err(
                        |err| match err {
                            WalkError::Io { source, .. } => WalkError::Io {
                                path: String::from_utf8_lossy(&entry.path).to_string(),
                                source,
                            },
                            other => other,
                        },
                    )?;
                }
                Some(Content::None) | None => {}
            }
            if after_own_chunks {
                out.cut();
            }
            if out.bytes.len() >= BLOCK {
                flush(&mut out, &mut emit)?;
            }
        }
        Ok::<(), WalkError>(())
    })();
    drop(order_rx);
    result?;
    for thread in threads {
        let _ = thread.join();
    }
    tree::encode_end(&mut out.bytes, totals);
    emit(out)?;
    counts.data_bytes = totals.data_bytes;
    Ok(counts)
}

/// Appends a large file's extents to `out`, emitting full blocks as they fill.
fn stream_extents(
    file: &File,
    extents: &[Extent],
    out: &mut Block,
    emit: &mut impl FnMut(Block) -> Result<Option<Vec<u8>>, WalkError>,
) -> Result<(), WalkError> {
    let io = |source| WalkError::Io {
        path: String::new(),
        source,
    };
    for extent in extents {
        let mut at = extent.offset;
        let end = extent.offset + extent.length;
        while at < end {
            let room = (2 * BLOCK).saturating_sub(out.bytes.len()).max(BLOCK);
            let take = room.min((end - at) as usize);
            let start = out.bytes.len();
            out.bytes.resize(start + take, 0);
            let mut filled = 0;
            while filled < take {
                match file.read_at(
                    &mut out.bytes[start + filled..start + take],
                    at + filled as u64,
                ) {
                    Ok(0) => {
                        return Err(io(std::io::Error::other(
                            "the file shrank while it was read: back up a snapshot, not a live volume",
                        )));
                    }
                    Ok(read) => filled += read,
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(io(err)),
                }
            }
            at += take as u64;
            if out.bytes.len() >= BLOCK {
                flush(out, emit)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn touching_extents_are_merged_and_empty_ones_dropped() {
        let e = |offset, length| Extent { offset, length };
        assert_eq!(
            merge_extents(vec![e(0, 4), e(4, 4), e(10, 0), e(12, 2), e(14, 1)]),
            vec![e(0, 8), e(12, 3)]
        );
    }

    #[test]
    fn device_numbers_split_as_linux_makes_them() {
        // makedev(8, 1) and makedev(259, 70000) as glibc computes them.
        assert_eq!(major_minor(0x801), (8, 1));
        let (major, minor) = (259u64, 70_000u64);
        let rdev = ((major & 0xfff) << 8)
            | ((major & !0xfff) << 32)
            | (minor & 0xff)
            | ((minor & !0xff) << 12);
        assert_eq!(major_minor(rdev), (major, minor));
    }

    /// Encodes the tree under `root` and decodes it back: (entry, data) in stream order, and
    /// every block's cut offsets were within the block.
    fn roundtrip(root: &Path) -> Vec<(Entry, Vec<u8>)> {
        let mut stream = Vec::new();
        encode_tree(root, 3, |block| {
            assert!(block.cuts.iter().all(|cut| *cut <= block.bytes.len()));
            assert!(block.cuts.windows(2).all(|pair| pair[0] < pair[1]));
            stream.extend_from_slice(&block.bytes);
            Ok(None)
        })
        .expect("encodes");
        let mut decoder = tree::Decoder::new(stream.as_slice());
        let mut out = Vec::new();
        while let tree::Record::Entry(entry) = decoder.next_record().expect("decodes") {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut decoder.data(), &mut data).expect("data");
            out.push((entry, data));
        }
        out
    }

    #[test]
    fn a_second_name_of_a_file_is_recorded_as_a_hardlink_to_the_first_in_stream_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir(root.join("b")).expect("dir");
        std::fs::write(root.join("b/first"), b"shared data").expect("file");
        std::fs::hard_link(root.join("b/first"), root.join("a-second")).expect("link");
        std::fs::hard_link(root.join("b/first"), root.join("z-third")).expect("link");
        std::fs::write(root.join("b/other"), b"x").expect("file");
        let entries = roundtrip(root);
        let paths: Vec<&[u8]> = entries.iter().map(|(e, _)| e.path.as_slice()).collect();
        // Depth first, siblings by name bytes: "a-second" < "b" < "b/…" < "z-third".
        assert_eq!(
            paths,
            [
                &b""[..],
                b"a-second",
                b"b",
                b"b/first",
                b"b/other",
                b"z-third"
            ]
        );
        let (first, data) = &entries[1];
        assert!(
            matches!(first.kind, Kind::File { size: 11, .. }),
            "{first:?}"
        );
        assert_eq!(
            data, b"shared data",
            "the first name in the stream carries the data"
        );
        for at in [3, 5] {
            assert_eq!(
                entries[at].0.kind,
                Kind::Hardlink {
                    target: b"a-second".to_vec()
                }
            );
            assert!(entries[at].1.is_empty());
        }
        assert!(matches!(entries[4].0.kind, Kind::File { size: 1, .. }));
    }

    #[test]
    fn the_same_tree_reads_to_the_same_stream_whatever_the_reader_threads_finish_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        for i in 0..300 {
            let sub = dir.path().join(format!("d{}", i % 7));
            std::fs::create_dir_all(&sub).expect("dir");
            std::fs::write(sub.join(format!("f{i}")), vec![i as u8; i * 13]).expect("file");
        }
        let first = roundtrip(dir.path());
        assert_eq!(first.len(), 1 + 7 + 300);
        for _ in 0..3 {
            assert_eq!(roundtrip(dir.path()), first);
        }
    }

    #[test]
    fn a_sparse_file_maps_to_its_data_runs_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sparse");
        let mut file = File::create(&path).expect("create");
        file.write_all_at(b"head", 0).expect("head");
        file.write_all_at(b"middle", 8 << 20).expect("middle");
        file.set_len(32 << 20).expect("length");
        file.flush().expect("flush");
        let file = File::open(&path).expect("open");
        let stat = file.metadata().expect("stat");
        let extents = data_extents(&file, &stat).expect("extents");
        let data: u64 = extents.iter().map(|e| e.length).sum();
        assert!(
            data < 1 << 20,
            "holes are left out, the runs are {extents:?}"
        );
        assert!(
            extents[0].offset == 0
                && extents
                    .iter()
                    .any(|e| e.offset <= 8 << 20 && e.offset + e.length >= (8 << 20) + 6)
        );
    }
}
