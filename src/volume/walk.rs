//! Reading a directory tree into a tree stream: one thread lists directories in the stream's
//! order, a few reader threads (`source.rs`) stat and read entries in parallel, and the
//! encoder takes their results back in that order, so the bytes are deterministic while the
//! reads overlap.
//!
//! Every entry is reached through its directory's open descriptor (`fs.rs`), never by a path.
//! Memory and descriptors stay bounded whatever the tree: at most [`WINDOW`] entries are in
//! flight, holding at most [`META_IN_FLIGHT_BYTES`] of metadata (xattrs, extent lists, names)
//! and [`READ_AHEAD_BYTES`] of file data; at most [`OPEN_FILES_MAX`] files wait open for the
//! encoder and [`DIRS_IN_FLIGHT_MAX`] closed directories beside the open ones. An entry that
//! does not fit is read by the encoder itself when its turn comes (`inflight.rs` holds the
//! budgets and the hardlink table).

use std::ffi::CString;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use super::fs::Dir;
use super::inflight::{Budget, DirCount, Limits, LinkTable, ListedDir};
use super::source::{self, Content, Hint, Outcome, Scanned, Target};
use super::tree::{self, Extent, Kind, Totals};

/// Entries listed ahead of the encoder.
pub const WINDOW: usize = 1024;
/// File data read ahead of the encoder, at most.
pub const READ_AHEAD_BYTES: u64 = 32 * 1024 * 1024;
/// Metadata of the entries in flight (names, xattrs, extent lists), at most.
pub const META_IN_FLIGHT_BYTES: u64 = 16 * 1024 * 1024;
/// Files left open for the encoder, at most.
pub const OPEN_FILES_MAX: u64 = 64;
/// Directories held open for entries in flight, beyond the ancestors being listed.
pub const DIRS_IN_FLIGHT_MAX: usize = 64;
/// A block handed to the repository writer is at least this big.
pub const BLOCK: usize = 1024 * 1024;

/// Why reading the tree failed.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// A file system call failed on an entry.
    #[error("{path}: {source}")]
    Io {
        /// The entry's path in the tree.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// An entry the format cannot record (a restore would refuse the stream).
    #[error("{path}: cannot be recorded: {reason}")]
    Unrestorable {
        /// The entry's path in the tree.
        path: String,
        /// What the format does not allow.
        reason: String,
    },
    /// The source can change while it is read.
    #[error(
        "{0} is writable (not a read-only mount): back up a read-only volume made from a \
         snapshot, or pass --live to accept a copy that may be inconsistent"
    )]
    Writable(String),
    /// The repository side stopped taking data.
    #[error("the repository writer stopped: {0}")]
    Stopped(String),
}

impl WalkError {
    /// A short, bounded label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Unrestorable { .. } => "unrestorable-entry",
            Self::Writable(_) => "writable-source",
            Self::Stopped(_) => "stopped",
        }
    }
}

type Slot = Receiver<Result<Outcome, WalkError>>;

struct Job {
    target: Target,
    done: SyncSender<Result<Outcome, WalkError>>,
}

/// A directory's names with their listed types, sorted by name bytes (the stream's order).
fn sorted_listing(dir: &Dir, relative: &[u8]) -> Result<Vec<(CString, Hint)>, WalkError> {
    let io = |source| WalkError::Io {
        path: source::display(relative),
        source,
    };
    let mut names = Vec::new();
    for (name, d_type) in dir.names().map_err(io)? {
        let name = CString::new(name).map_err(|e| io(std::io::Error::other(e)))?;
        let file_type = match d_type {
            libc::DT_DIR => libc::S_IFDIR,
            libc::DT_REG => libc::S_IFREG,
            libc::DT_UNKNOWN => dir.stat_at(&name).map_err(io)?.file_type(),
            _ => 0,
        };
        let hint = match file_type {
            libc::S_IFDIR => Hint::Directory,
            libc::S_IFREG => Hint::File,
            _ => Hint::Other,
        };
        names.push((name, hint));
    }
    names.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(names)
}

/// A directory being listed: the directory, its stream path, the names still to send.
type OpenDirectory = (Arc<ListedDir>, Vec<u8>, std::vec::IntoIter<(CString, Hint)>);

/// The listing thread: sends every entry, depth first in name order, to the readers and its
/// result slot to the encoder. `listed` is told each directory's path once it is listed.
fn list(
    root: Arc<ListedDir>,
    dirs: Arc<DirCount>,
    jobs: Arc<Mutex<std::sync::mpsc::Sender<Job>>>,
    order: SyncSender<Slot>,
    listed: &(dyn Fn(&[u8]) + Sync),
) {
    let submit = |dir: Arc<ListedDir>, name: CString, relative: Vec<u8>, hint: Hint| -> bool {
        let (done, result) = sync_channel(1);
        let target = Target {
            dir,
            name,
            relative,
            hint,
        };
        let sent = jobs
            .lock()
            .map(|jobs| jobs.send(Job { target, done }).is_ok());
        sent.unwrap_or(false) && order.send(result).is_ok()
    };
    let fail = |err: WalkError| {
        let (done, result) = sync_channel(1);
        let _ = done.send(Err(err));
        let _ = order.send(result);
    };
    if !submit(root.clone(), CString::default(), Vec::new(), Hint::Root) {
        return;
    }
    let mut open: Vec<OpenDirectory> = match sorted_listing(&root, b"") {
        Ok(names) => vec![(root, Vec::new(), names.into_iter())],
        Err(err) => return fail(err),
    };
    listed(b"");
    while let Some((dir, relative, names)) = open.last_mut() {
        let Some((name, hint)) = names.next() else {
            open.pop();
            continue;
        };
        let mut child = relative.clone();
        if !child.is_empty() {
            child.push(b'/');
        }
        child.extend_from_slice(name.as_bytes());
        if hint != Hint::Directory {
            if !submit(dir.clone(), name, child, hint) {
                return;
            }
            continue;
        }
        let depth = open.len();
        dirs.wait_below(depth + DIRS_IN_FLIGHT_MAX);
        let Some((parent, _, _)) = open.last() else {
            return;
        };
        let opened = parent.open_dir(&name).map_err(|source| WalkError::Io {
            path: source::display(&child),
            source: match source.raw_os_error() {
                Some(libc::ELOOP) | Some(libc::ENOTDIR) => std::io::Error::other(
                    "was a directory when listed and is not now: back up a snapshot, not a \
                     live volume",
                ),
                _ => source,
            },
        });
        let opened = match opened {
            Ok(opened) => ListedDir::new(opened, &dirs),
            Err(err) => return fail(err),
        };
        if !submit(opened.clone(), CString::default(), child.clone(), hint) {
            return;
        }
        match sorted_listing(&opened, &child) {
            Ok(names) => {
                listed(&child);
                open.push((opened, child, names.into_iter()));
            }
            Err(err) => return fail(err),
        }
    }
}

/// Whether the file system holding `dir` is mounted read-only.
fn read_only(dir: &Dir) -> std::io::Result<bool> {
    let mut raw = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: an open descriptor and room for one statvfs.
    super::fs::check(unsafe { libc::fstatvfs(dir.raw(), raw.as_mut_ptr()) })?;
    // SAFETY: initialised by the successful call above.
    let flags = unsafe { raw.assume_init() }.f_flag;
    Ok(flags & libc::ST_RDONLY != 0)
}

/// How to read the source.
#[derive(Clone, Copy, Debug)]
pub struct WalkOptions {
    /// Threads that stat and read entries in parallel.
    pub readers: usize,
    /// Accept a source that is not a read-only mount (it may change while read).
    pub live: bool,
}

/// Reads the tree under `root` and hands the encoded stream, in blocks of at least [`BLOCK`]
/// bytes, to `emit` (which returns the block's buffer for reuse when it can). A source that
/// is not mounted read-only is refused unless `options.live`.
pub fn encode_tree(
    root: &Path,
    options: WalkOptions,
    emit: impl FnMut(Block) -> Result<Option<Vec<u8>>, WalkError>,
) -> Result<TreeCounts, WalkError> {
    encode_tree_observed(root, options, emit, &|_| {})
}

/// [`encode_tree`], calling `listed` with each directory's path as soon as it is listed
/// (before its entries are read): how a test changes the tree under a running backup.
pub fn encode_tree_observed(
    root: &Path,
    options: WalkOptions,
    emit: impl FnMut(Block) -> Result<Option<Vec<u8>>, WalkError>,
    listed: &(dyn Fn(&[u8]) + Sync),
) -> Result<TreeCounts, WalkError> {
    let caps = Caps {
        read_ahead: READ_AHEAD_BYTES,
        meta: META_IN_FLIGHT_BYTES,
        open_files: OPEN_FILES_MAX,
    };
    encode_with_caps(root, options, emit, listed, caps)
}

/// The readers' caps (the constants above, smaller in tests).
#[derive(Clone, Copy, Debug)]
struct Caps {
    read_ahead: u64,
    meta: u64,
    open_files: u64,
}

fn encode_with_caps(
    root: &Path,
    options: WalkOptions,
    mut emit: impl FnMut(Block) -> Result<Option<Vec<u8>>, WalkError>,
    listed: &(dyn Fn(&[u8]) + Sync),
    caps: Caps,
) -> Result<TreeCounts, WalkError> {
    let root_dir = Dir::open_path(root).map_err(|source| WalkError::Io {
        path: root.display().to_string(),
        source,
    })?;
    let writable = !read_only(&root_dir).map_err(|source| WalkError::Io {
        path: root.display().to_string(),
        source,
    })?;
    if writable && !options.live {
        return Err(WalkError::Writable(root.display().to_string()));
    }
    let dirs = DirCount::new();
    let root_dir = ListedDir::new(root_dir, &dirs);
    let limits = Arc::new(Limits {
        data: Budget::new(caps.read_ahead),
        meta: Budget::new(caps.meta),
        open_files: Budget::new(caps.open_files),
    });
    let (jobs_tx, jobs_rx) = std::sync::mpsc::channel::<Job>();
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    let (order_tx, order_rx) = sync_channel::<Slot>(WINDOW);
    std::thread::scope(|scope| {
        for _ in 0..options.readers.max(1) {
            let jobs_rx = jobs_rx.clone();
            let limits = limits.clone();
            scope.spawn(move || {
                loop {
                    let job = match jobs_rx.lock() {
                        Ok(jobs) => match jobs.recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        },
                        Err(_) => return,
                    };
                    let Job { target, done } = job;
                    if done.send(source::scan(target, Some(&limits))).is_err() {
                        return;
                    }
                }
            });
        }
        let jobs = Arc::new(Mutex::new(jobs_tx));
        let lister_dirs = dirs.clone();
        scope.spawn(move || list(root_dir, lister_dirs, jobs, order_tx, listed));
        let result = encode_in_order(&order_rx, &mut emit);
        // Unblocks the lister and, through it, the readers, whatever happened.
        dirs.stop();
        drop(order_rx);
        result
    })
}

/// The encoder: takes the readers' results in stream order and writes the stream.
fn encode_in_order(
    order: &Receiver<Slot>,
    emit: &mut impl FnMut(Block) -> Result<Option<Vec<u8>>, WalkError>,
) -> Result<TreeCounts, WalkError> {
    let mut counts = TreeCounts::default();
    let mut totals = Totals::default();
    let mut out = Block {
        bytes: Vec::with_capacity(2 * BLOCK),
        cuts: Vec::new(),
    };
    tree::encode_start(&mut out.bytes);
    let mut after_own_chunks = false;
    let mut links = LinkTable::default();
    for slot in order.iter() {
        let outcome = slot
            .recv()
            .map_err(|_| WalkError::Stopped("a reader thread ended".into()))??;
        let scanned = match outcome {
            Outcome::Scanned(scanned) => scanned,
            Outcome::Deferred(target) => match source::scan(target, None)? {
                Outcome::Scanned(scanned) => scanned,
                Outcome::Deferred(target) => {
                    return Err(WalkError::Stopped(format!(
                        "{} could not be read",
                        source::display(&target.relative)
                    )));
                }
            },
        };
        let Scanned {
            mut entry,
            mut content,
            link,
            _meta,
        } = scanned;
        if let Some((dev, ino, nlink)) = link
            && let Some(first) = links.seen(dev, ino, nlink, &entry.path)
        {
            content = Content::None;
            entry.kind = Kind::Hardlink { target: first };
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
            Kind::Fifo | Kind::CharDevice { .. } | Kind::BlockDevice { .. } => counts.special += 1,
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
            Content::Read(data, _held) => out.bytes.extend_from_slice(&data),
            Content::Open(file, _permit) => {
                let Kind::File { extents, .. } = &entry.kind else {
                    unreachable!("only files are left open")
                };
                stream_extents(&file, extents, &mut out, emit).map_err(|err| match err {
                    WalkError::Io { source, .. } => WalkError::Io {
                        path: source::display(&entry.path),
                        source,
                    },
                    other => other,
                })?;
            }
            Content::None => {}
        }
        if after_own_chunks {
            out.cut();
        }
        if out.bytes.len() >= BLOCK {
            flush(&mut out, emit)?;
        }
    }
    tree::encode_end(&mut out.bytes, totals);
    emit(out)?;
    counts.data_bytes = totals.data_bytes;
    Ok(counts)
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
    use crate::volume::decode::{Decoder, Record};
    use crate::volume::tree::Entry;

    const LIVE: WalkOptions = WalkOptions {
        readers: 3,
        live: true,
    };

    /// Encodes the tree under `root` and decodes it back: (entry, data) in stream order, and
    /// every block's cut offsets were within the block.
    fn roundtrip(root: &Path) -> Vec<(Entry, Vec<u8>)> {
        let mut stream = Vec::new();
        encode_tree(root, LIVE, |block| {
            assert!(block.cuts.iter().all(|cut| *cut <= block.bytes.len()));
            assert!(block.cuts.windows(2).all(|pair| pair[0] < pair[1]));
            stream.extend_from_slice(&block.bytes);
            Ok(None)
        })
        .expect("encodes");
        let mut decoder = Decoder::new(stream.as_slice());
        let mut out = Vec::new();
        while let Record::Entry(entry) = decoder.next_record().expect("decodes") {
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
    fn a_symlink_swapped_into_a_middle_component_during_a_backup_is_never_followed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (root, outside, moved) = (
            dir.path().join("root"),
            dir.path().join("outside"),
            dir.path().join("moved"),
        );
        std::fs::create_dir_all(root.join("a/b")).expect("dirs");
        std::fs::write(root.join("a/b/token"), b"the tenant's own file").expect("file");
        std::fs::create_dir_all(outside.join("b")).expect("outside");
        std::fs::write(outside.join("b/token"), b"the mover's secret").expect("secret");
        // Once `a` is listed, a live source swaps it for a symlink to the secret's directory.
        let swap = |listed: &[u8]| {
            if listed == b"a" {
                std::fs::rename(root.join("a"), &moved).expect("move a away");
                std::os::unix::fs::symlink(&outside, root.join("a")).expect("symlink");
            }
        };
        let mut stream = Vec::new();
        let result = encode_tree_observed(
            &root,
            LIVE,
            |block| {
                stream.extend_from_slice(&block.bytes);
                Ok(None)
            },
            &swap,
        );
        let found = |needle: &[u8]| stream.windows(needle.len()).any(|w| w == needle);
        assert!(!found(b"the mover's secret"), "read through the symlink");
        // The directory held open is the one read: the swap is invisible to the backup.
        result.expect("encodes");
        assert!(found(b"the tenant's own file"));
    }

    #[test]
    fn entries_that_do_not_fit_in_flight_are_read_by_the_encoder_to_the_same_stream() {
        let dir = tempfile::tempdir().expect("temp dir");
        for i in 0..200 {
            let sub = dir.path().join(format!("d{}", i % 5));
            std::fs::create_dir_all(&sub).expect("dir");
            std::fs::write(sub.join(format!("f{i:03}")), vec![i as u8; 30 * i]).expect("file");
        }
        let encode = |caps: Caps| {
            let mut stream = Vec::new();
            encode_with_caps(
                dir.path(),
                LIVE,
                |block| {
                    stream.extend_from_slice(&block.bytes);
                    Ok(None)
                },
                &|_| {},
                caps,
            )
            .expect("encodes");
            stream
        };
        let roomy = encode(Caps {
            read_ahead: READ_AHEAD_BYTES,
            meta: META_IN_FLIGHT_BYTES,
            open_files: OPEN_FILES_MAX,
        });
        for caps in [
            // No read-ahead: files wait open, two at most, the rest are deferred.
            Caps {
                read_ahead: 0,
                meta: META_IN_FLIGHT_BYTES,
                open_files: 2,
            },
            // No room for any entry's metadata: the encoder reads every entry itself.
            Caps {
                read_ahead: READ_AHEAD_BYTES,
                meta: 0,
                open_files: 0,
            },
        ] {
            assert!(encode(caps) == roomy, "{caps:?}");
        }
    }

    #[test]
    fn a_file_with_more_xattrs_than_the_format_records_fails_the_backup_naming_it() {
        // tmpfs takes many and large user.* attributes; ext4 keeps them to one block.
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            return eprintln!("NOTE: no /dev/shm; not checked");
        };
        let set = |path: &Path, name: String, value: &[u8]| {
            let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
            let name = std::ffi::CString::new(name).expect("name");
            // SAFETY: NUL-terminated strings and a value valid for its length.
            let done = unsafe {
                libc::setxattr(
                    path.as_ptr(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            };
            done == 0
        };
        let many = dir.path().join("many");
        std::fs::write(&many, b"x").expect("file");
        if !(0..=tree::XATTRS_MAX).all(|i| set(&many, format!("user.{i:05}"), b"")) {
            return eprintln!("NOTE: /dev/shm refuses user.* attributes; not checked");
        }
        let err = encode_tree(dir.path(), LIVE, |_| Ok(None)).expect_err("refused");
        assert!(err.to_string().contains("many"), "{err}");
        assert!(
            err.to_string().contains("too many extended attributes"),
            "{err}"
        );
        std::fs::remove_file(&many).expect("remove");
        let heavy = dir.path().join("heavy");
        std::fs::write(&heavy, b"x").expect("file");
        for i in 0..20 {
            assert!(set(&heavy, format!("user.{i:02}"), &[7u8; 60_000]));
        }
        let err = encode_tree(dir.path(), LIVE, |_| Ok(None)).expect_err("refused");
        assert!(err.to_string().contains("heavy"), "{err}");
        assert!(
            err.to_string().contains("bytes of extended attributes"),
            "{err}"
        );
    }

    #[test]
    fn a_backup_whose_repository_side_fails_midway_ends_with_the_error_instead_of_hanging() {
        let dir = tempfile::tempdir().expect("temp dir");
        for i in 0..400 {
            let sub = dir.path().join(format!("d{i:03}"));
            std::fs::create_dir(&sub).expect("dir");
            std::fs::write(sub.join("f"), vec![i as u8; 20_000]).expect("file");
        }
        let root = dir.path().to_path_buf();
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let result = encode_tree(&root, LIVE, |_| {
                Err(WalkError::Stopped("the repository went away".into()))
            });
            let _ = done_tx.send(result.map(|_| ()));
        });
        let result = done
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the walk ended");
        assert!(
            result
                .expect_err("failed")
                .to_string()
                .contains("went away")
        );
    }
}
