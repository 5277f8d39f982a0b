//! Reading one entry of the source tree, relative to its directory's open descriptor: its
//! metadata, extended attributes, data runs and (for a small file) data. What the reader
//! threads of `walk.rs` run, and the encoder itself for an entry that did not fit in flight.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::fs::{Dir, Stat, fstat};
use super::inflight::{Held, Limits, ListedDir};
use super::tree::{self, Entry, Extent, Kind, Meta};
use super::walk::WalkError;

/// What the listing said about a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Hint {
    Root,
    Directory,
    File,
    Other,
}

/// An entry to read: the directory it is in (held open), its name there, its stream path.
pub(super) struct Target {
    /// The directory holding it; for the root and listed directories, the directory itself.
    pub dir: Arc<ListedDir>,
    /// Its name in `dir`; empty when `dir` is the entry itself.
    pub name: CString,
    pub relative: Vec<u8>,
    pub hint: Hint,
}

/// File data as a reader left it for the encoder.
pub(super) enum Content {
    None,
    Read(Vec<u8>, Held),
    /// Too big for the read-ahead budget: the encoder reads it (the permit bounds open files).
    Open(File, Option<Held>),
}

pub(super) struct Scanned {
    pub entry: Entry,
    pub content: Content,
    /// (device, inode, links) of a regular file with more than one link.
    pub link: Option<(u64, u64, u64)>,
    /// The entry's share of the metadata budget.
    pub _meta: Option<Held>,
}

/// A reader's result: the entry, or the target back when it did not fit in the budgets (the
/// encoder then reads it itself, one at a time).
pub(super) enum Outcome {
    Scanned(Scanned),
    Deferred(Target),
}

fn io_error(relative: &[u8]) -> impl FnOnce(std::io::Error) -> WalkError + '_ {
    move |source| WalkError::Io {
        path: display(relative),
        source,
    }
}

/// A stream path as people read it (the root as `.`).
pub(super) fn display(relative: &[u8]) -> String {
    if relative.is_empty() {
        ".".into()
    } else {
        String::from_utf8_lossy(relative).into_owned()
    }
}

fn unsupported(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ENOTSUP) | Some(libc::ENODATA) | Some(libc::EPERM) | Some(libc::EACCES)
    )
}

/// Where the calls on extended attributes look: an open file, or a path that is not
/// followed at its end.
enum XattrTarget<'a> {
    Fd(i32),
    Path(&'a CStr),
}

/// Extended attributes, sorted by name; none where the file system has none or refuses. More
/// than the format allows ([`tree::XATTRS_MAX`], [`tree::XATTR_BYTES_MAX`]) is an error
/// naming the entry, found before the values are all read.
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
    let too_many = |what: String| {
        std::io::Error::other(format!(
            "{what}: more than a tree stream records for one entry (at most {} attributes, \
             {} bytes); remove some, or leave this file out of the volume",
            tree::XATTRS_MAX,
            tree::XATTR_BYTES_MAX
        ))
    };
    let mut xattrs = Vec::new();
    let mut total = 0usize;
    for name in names[..listed].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if xattrs.len() as u64 >= tree::XATTRS_MAX {
            return Err(too_many("too many extended attributes".into()));
        }
        let c_name = CString::new(name).map_err(std::io::Error::other)?;
        let mut value = vec![0u8; 256];
        loop {
            let got = get(&c_name, &mut value);
            if got >= 0 {
                value.truncate(got as usize);
                total += name.len() + value.len();
                if total > tree::XATTR_BYTES_MAX {
                    return Err(too_many(format!("{total} bytes of extended attributes")));
                }
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

fn meta_of(stat: &Stat, xattrs: Vec<(Vec<u8>, Vec<u8>)>) -> Meta {
    Meta {
        mode: stat.mode & 0o7777,
        uid: stat.uid,
        gid: stat.gid,
        mtime_sec: stat.mtime_sec,
        mtime_nsec: stat.mtime_nsec.clamp(0, 999_999_999) as u32,
        xattrs,
    }
}

/// Linux's (glibc's) split of a device number; what Linux can create fits in 12 bits of
/// major and 20 of minor ([`tree::DEVICE_MAJOR_MAX`], [`tree::DEVICE_MINOR_MAX`]).
pub fn major_minor(rdev: u64) -> (u64, u64) {
    (u64::from(libc::major(rdev)), u64::from(libc::minor(rdev)))
}

/// Data runs of an open file: one run unless the file occupies fewer blocks than its size
/// (only then can it have holes), in which case SEEK_DATA/SEEK_HOLE map them. Never more than
/// [`tree::EXTENTS_MAX`] runs, and never more than twice that in memory while mapping.
fn data_extents(file: &File, stat: &Stat) -> std::io::Result<Vec<Extent>> {
    data_extents_at_most(file, stat, tree::EXTENTS_MAX as usize)
}

fn data_extents_at_most(file: &File, stat: &Stat, max: usize) -> std::io::Result<Vec<Extent>> {
    let size = stat.size;
    if size == 0 {
        return Ok(Vec::new());
    }
    let whole = || {
        vec![Extent {
            offset: 0,
            length: size,
        }]
    };
    if stat.blocks.saturating_mul(512) >= size {
        return Ok(whole());
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
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => return Ok(whole()),
            Err(err) => return Err(err),
        };
        let end = seek(start, libc::SEEK_HOLE)?.unwrap_or(size).min(size);
        extents.push(Extent {
            offset: start,
            length: end - start,
        });
        if extents.len() >= 2 * max {
            extents = tree::limit_extents(extents, max);
        }
        at = end;
    }
    Ok(tree::limit_extents(extents, max))
}

static NOATIME_REFUSED: AtomicBool = AtomicBool::new(false);

/// Opens file `name` of `dir` for reading, never through a symlink, and where allowed without
/// touching its access time.
fn open_for_reading(dir: &Dir, name: &CStr) -> std::io::Result<File> {
    // O_NONBLOCK: a FIFO put where a file was listed must not hang the backup.
    let flags = libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK;
    if !NOATIME_REFUSED.load(Ordering::Relaxed) {
        match dir.open_file(name, flags | libc::O_NOATIME, 0) {
            Err(err) if err.raw_os_error() == Some(libc::EPERM) => {
                NOATIME_REFUSED.store(true, Ordering::Relaxed);
            }
            other => return other,
        }
    }
    dir.open_file(name, flags, 0)
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

/// Heap bytes an entry holds while in flight (the metadata budget's unit).
fn meta_bytes(entry: &Entry) -> u64 {
    let xattrs: usize = entry
        .meta
        .xattrs
        .iter()
        .map(|(n, v)| n.len() + v.len() + 48)
        .sum();
    let kind = match &entry.kind {
        Kind::File { extents, .. } => extents.len() * std::mem::size_of::<Extent>(),
        Kind::Symlink { target } | Kind::Hardlink { target } => target.len(),
        _ => 0,
    };
    (entry.path.len() + xattrs + kind + 256) as u64
}

fn wrong_type(what: &str) -> std::io::Error {
    std::io::Error::other(format!(
        "{what}: it changed while it was read; back up a snapshot, not a live volume"
    ))
}

/// One entry's metadata and, for a small file, its data. With `limits` (a reader thread) an
/// entry that does not fit in the budgets comes back deferred; without (the encoder), it is
/// always read, a file left open.
pub(super) fn scan(target: Target, limits: Option<&Arc<Limits>>) -> Result<Outcome, WalkError> {
    let at = io_error(&target.relative);
    let (entry, content, link) = if target.name.as_bytes().is_empty() {
        // The root or a listed directory: the lister opened it (O_DIRECTORY | O_NOFOLLOW).
        let stat = target.dir.stat().map_err(at)?;
        let xattrs =
            read_xattrs(XattrTarget::Fd(target.dir.raw())).map_err(io_error(&target.relative))?;
        let entry = Entry {
            path: target.relative.clone(),
            meta: meta_of(&stat, xattrs),
            kind: Kind::Directory,
        };
        (entry, Content::None, None)
    } else {
        match scan_named(&target, limits).map_err(at)? {
            Some(found) => found,
            None => return Ok(Outcome::Deferred(target)),
        }
    };
    // What the decoder would refuse is not written: the backup fails here, naming the entry.
    tree::check_entry(&entry).map_err(|reason| WalkError::Unrestorable {
        path: display(&entry.path),
        reason,
    })?;
    let meta = match limits {
        Some(limits) => match limits.meta.try_take(meta_bytes(&entry)) {
            Some(held) => Some(held),
            None => return Ok(Outcome::Deferred(target)),
        },
        None => None,
    };
    Ok(Outcome::Scanned(Scanned {
        entry,
        content,
        link,
        _meta: meta,
    }))
}

type Found = (Entry, Content, Option<(u64, u64, u64)>);

/// An entry reached by name in its directory; None when a reader cannot hold it in flight.
fn scan_named(target: &Target, limits: Option<&Arc<Limits>>) -> std::io::Result<Option<Found>> {
    let dir: &Dir = &target.dir;
    let name = target.name.as_c_str();
    if target.hint == Hint::File {
        match open_for_reading(dir, name) {
            Ok(file) => {
                let stat = fstat(file.as_raw_fd())?;
                if stat.file_type() == libc::S_IFREG {
                    return scan_file(target, file, &stat, limits);
                }
            }
            // Replaced by a symlink since it was listed: record what is there now.
            Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {}
            Err(err) => return Err(err),
        }
    }
    let stat = dir.stat_at(name)?;
    let kind = match stat.file_type() {
        libc::S_IFLNK => Kind::Symlink {
            target: dir.read_link_at(name)?,
        },
        libc::S_IFIFO => Kind::Fifo,
        libc::S_IFCHR | libc::S_IFBLK => {
            let (major, minor) = major_minor(stat.rdev);
            if stat.file_type() == libc::S_IFCHR {
                Kind::CharDevice { major, minor }
            } else {
                Kind::BlockDevice { major, minor }
            }
        }
        libc::S_IFREG if target.hint != Hint::File => {
            let file = open_for_reading(dir, name)?;
            let stat = fstat(file.as_raw_fd())?;
            if stat.file_type() != libc::S_IFREG {
                return Err(wrong_type("was a regular file"));
            }
            return scan_file(target, file, &stat, limits);
        }
        libc::S_IFDIR => return Err(wrong_type("a directory appeared where none was listed")),
        libc::S_IFREG => return Err(wrong_type("was listed as a regular file")),
        _ => {
            return Err(std::io::Error::other(
                "a socket or unknown file type cannot be backed up",
            ));
        }
    };
    let xattrs = read_xattrs(XattrTarget::Path(&dir.proc_path(name)))?;
    let entry = Entry {
        path: target.relative.clone(),
        meta: meta_of(&stat, xattrs),
        kind,
    };
    Ok(Some((entry, Content::None, None)))
}

fn scan_file(
    target: &Target,
    file: File,
    stat: &Stat,
    limits: Option<&Arc<Limits>>,
) -> std::io::Result<Option<Found>> {
    let xattrs = read_xattrs(XattrTarget::Fd(file.as_raw_fd()))?;
    let extents = data_extents(&file, stat)?;
    let data_len: u64 = extents.iter().map(|e| e.length).sum();
    let content = if data_len == 0 {
        Content::None
    } else {
        match limits {
            None => Content::Open(file, None),
            Some(limits) => match limits.data.try_take(data_len) {
                Some(held) => {
                    let mut data = Vec::with_capacity(data_len as usize);
                    read_extents(&file, &extents, &mut data)?;
                    Content::Read(data, held)
                }
                // Read by the encoder: kept open while a permit allows, reopened otherwise.
                None => match limits.open_files.try_take(1) {
                    Some(permit) => Content::Open(file, Some(permit)),
                    None => return Ok(None),
                },
            },
        }
    };
    let entry = Entry {
        path: target.relative.clone(),
        meta: meta_of(stat, xattrs),
        kind: Kind::File {
            size: stat.size,
            extents,
        },
    };
    let link = (stat.nlink > 1).then_some((stat.dev, stat.ino, stat.nlink));
    Ok(Some((entry, content, link)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn device_numbers_split_as_glibc_makes_them() {
        assert_eq!(major_minor(libc::makedev(8, 1)), (8, 1));
        for (major, minor) in [
            (259u32, 0x9_8765u32),
            (u32::MAX, u32::MAX),
            (0xfff, 0xf_ffff),
        ] {
            let rdev = libc::makedev(major, minor);
            assert_eq!(
                major_minor(rdev),
                (u64::from(major), u64::from(minor)),
                "{rdev:#x}"
            );
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
        let stat = fstat(file.as_raw_fd()).expect("stat");
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

    #[test]
    fn a_file_fragmented_beyond_the_extent_limit_is_mapped_within_it_covering_all_its_data() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("fragmented");
        let file = File::create(&path).expect("create");
        // 40 data blocks, 64 KiB apart, and one large hole: 40 runs for a limit of 8.
        let offsets: Vec<u64> = (0..40u64)
            .map(|i| i * (64 << 10) + if i >= 20 { 64 << 20 } else { 0 })
            .collect();
        for at in &offsets {
            file.write_all_at(b"data", *at).expect("write");
        }
        file.set_len(200 << 20).expect("length");
        drop(file);
        let file = File::open(&path).expect("open");
        let stat = fstat(file.as_raw_fd()).expect("stat");
        let all = data_extents(&file, &stat).expect("extents");
        assert!(
            all.len() >= 40,
            "the file system keeps the holes: {}",
            all.len()
        );
        let limited = data_extents_at_most(&file, &stat, 8).expect("extents");
        assert!(limited.len() <= 8, "{limited:?}");
        tree::check_extents(stat.size, &limited).expect("well formed");
        for at in offsets {
            assert!(
                limited
                    .iter()
                    .any(|e| e.offset <= at && at + 4 <= e.offset + e.length),
                "{at} is covered by {limited:?}"
            );
        }
        let data: u64 = limited.iter().map(|e| e.length).sum();
        assert!(data < 32 << 20, "the large hole stays a hole: {data}");
    }
}
