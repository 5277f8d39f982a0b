//! Recreating a tree stream's files under a target directory: contents, then each entry's
//! owner (only when running as root), mode, extended attributes and time; directories get
//! their mode and time last, deepest first, so creating their entries does not change them.
//!
//! Nothing is written outside the target: the decoder only yields entries whose parent is a
//! directory created from the stream, files are created with `O_EXCL | O_NOFOLLOW`, and a
//! hardlink's target is checked to be a regular file reached through real directories.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::tree::{Decoder, Entry, Kind, Meta, Record, TreeError};

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The stream does not decode.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// A file system call failed.
    #[error("{path}: {source}")]
    Io {
        /// The path under the target.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
}

/// What a restore wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExtractCounts {
    /// Entries recreated (the root's metadata included).
    pub entries: u64,
    /// File data bytes written.
    pub data_bytes: u64,
    /// Extended attributes the target file system refused (it lacks support or permission).
    pub xattrs_skipped: u64,
    /// Devices not created (creating them needs root).
    pub devices_skipped: u64,
}

/// How to restore.
#[derive(Clone, Copy, Debug)]
pub struct ExtractOptions {
    /// Set owners and groups (needs root; without it files belong to the caller).
    pub owners: bool,
}

impl ExtractOptions {
    /// Owners are set when the process runs as root.
    pub fn for_this_process() -> Self {
        // SAFETY: geteuid has no preconditions.
        Self {
            owners: unsafe { libc::geteuid() } == 0,
        }
    }
}

fn c_path(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)
}

fn check(result: libc::c_int) -> std::io::Result<()> {
    if result < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn timespec(meta: &Meta) -> [libc::timespec; 2] {
    let time = libc::timespec {
        tv_sec: meta.mtime_sec as libc::time_t,
        tv_nsec: meta.mtime_nsec as libc::c_long,
    };
    // Access time is not recorded: it is set to the modification time.
    [time, time]
}

struct Extractor {
    target: PathBuf,
    options: ExtractOptions,
    counts: ExtractCounts,
    /// Directories to finish (mode, time) once everything inside them exists.
    directories: Vec<(PathBuf, Meta)>,
    buffer: Vec<u8>,
}

impl Extractor {
    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> ExtractError + use<> {
        let path = path.display().to_string();
        move |source| ExtractError::Io { path, source }
    }

    /// Extended attributes on an open file or, without following, on a path.
    fn set_xattrs(&mut self, fd: Option<i32>, path: &CString, meta: &Meta) -> std::io::Result<()> {
        for (name, value) in &meta.xattrs {
            let name = CString::new(name.as_slice()).map_err(std::io::Error::other)?;
            let (ptr, len) = (value.as_ptr().cast::<libc::c_void>(), value.len());
            // SAFETY: NUL-terminated name and path, a value valid for `len` bytes.
            let result = unsafe {
                match fd {
                    Some(fd) => libc::fsetxattr(fd, name.as_ptr(), ptr, len, 0),
                    None => libc::lsetxattr(path.as_ptr(), name.as_ptr(), ptr, len, 0),
                }
            };
            if result < 0 {
                let err = std::io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::ENOTSUP) | Some(libc::EPERM) | Some(libc::EACCES) => {
                        self.counts.xattrs_skipped += 1
                    }
                    _ => return Err(err),
                }
            }
        }
        Ok(())
    }

    fn entry(&mut self, entry: Entry, data: &mut impl Read) -> Result<(), ExtractError> {
        let path = if entry.path.is_empty() {
            self.target.clone()
        } else {
            self.target.join(std::ffi::OsStr::from_bytes(&entry.path))
        };
        let io = self.io(&path);
        let c = c_path(&path).map_err(self.io(&path))?;
        let Entry { meta, kind, .. } = entry;
        let owners = self.options.owners;
        let result: std::io::Result<()> = (|| {
            match kind {
                Kind::Directory => {
                    if !c.as_bytes().is_empty() && path != self.target {
                        // SAFETY: NUL-terminated path.
                        let made = check(unsafe { libc::mkdir(c.as_ptr(), 0o700) });
                        if let Err(err) = made {
                            // A directory already there (lost+found of a fresh volume) is
                            // reused; anything else is not overwritten.
                            let there = std::fs::symlink_metadata(&path);
                            if err.kind() != std::io::ErrorKind::AlreadyExists
                                || !there.is_ok_and(|m| m.is_dir())
                            {
                                return Err(err);
                            }
                        }
                    }
                    if owners {
                        // SAFETY: NUL-terminated path.
                        check(unsafe { libc::lchown(c.as_ptr(), meta.uid, meta.gid) })?;
                    }
                    self.set_xattrs(None, &c, &meta)?;
                    self.directories.push((path.clone(), meta));
                }
                Kind::File { size, extents } => {
                    // SAFETY: NUL-terminated path; the descriptor is owned by the File.
                    let fd = unsafe {
                        libc::open(
                            c.as_ptr(),
                            libc::O_WRONLY
                                | libc::O_CREAT
                                | libc::O_EXCL
                                | libc::O_NOFOLLOW
                                | libc::O_CLOEXEC,
                            0o600,
                        )
                    };
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // SAFETY: just opened, owned by nobody else.
                    let file = unsafe { File::from_raw_fd(fd) };
                    for extent in &extents {
                        let mut at = extent.offset;
                        let end = extent.offset + extent.length;
                        while at < end {
                            let take = (end - at).min(self.buffer.len() as u64) as usize;
                            data.read_exact(&mut self.buffer[..take])?;
                            file.write_all_at(&self.buffer[..take], at)?;
                            at += take as u64;
                        }
                        self.counts.data_bytes += extent.length;
                    }
                    if extents.last().is_none_or(|e| e.offset + e.length < size) {
                        file.set_len(size)?;
                    }
                    if owners {
                        // SAFETY: an open descriptor.
                        check(unsafe { libc::fchown(fd, meta.uid, meta.gid) })?;
                    }
                    // After chown, which clears setuid and setgid.
                    // SAFETY: an open descriptor.
                    check(unsafe { libc::fchmod(fd, meta.mode as libc::mode_t) })?;
                    self.set_xattrs(Some(file.as_raw_fd()), &c, &meta)?;
                    let times = timespec(&meta);
                    // SAFETY: an open descriptor and two timespecs.
                    check(unsafe { libc::futimens(fd, times.as_ptr()) })?;
                }
                Kind::Symlink { target } => {
                    let target = CString::new(target).map_err(std::io::Error::other)?;
                    // SAFETY: NUL-terminated strings.
                    check(unsafe { libc::symlink(target.as_ptr(), c.as_ptr()) })?;
                    if owners {
                        // SAFETY: NUL-terminated path.
                        check(unsafe { libc::lchown(c.as_ptr(), meta.uid, meta.gid) })?;
                    }
                    self.set_xattrs(None, &c, &meta)?;
                    self.set_times_nofollow(&c, &meta)?;
                }
                Kind::Hardlink { target } => {
                    let original = self.checked_link_target(&target)?;
                    let original = c_path(&original)?;
                    // SAFETY: NUL-terminated paths; flags 0 do not follow a final symlink.
                    check(unsafe {
                        libc::linkat(
                            libc::AT_FDCWD,
                            original.as_ptr(),
                            libc::AT_FDCWD,
                            c.as_ptr(),
                            0,
                        )
                    })?;
                }
                Kind::Fifo | Kind::CharDevice { .. } | Kind::BlockDevice { .. } => {
                    let (file_type, rdev) = match kind {
                        Kind::CharDevice { major, minor } => {
                            (libc::S_IFCHR, libc::makedev(major as u32, minor as u32))
                        }
                        Kind::BlockDevice { major, minor } => {
                            (libc::S_IFBLK, libc::makedev(major as u32, minor as u32))
                        }
                        _ => (libc::S_IFIFO, 0),
                    };
                    // SAFETY: NUL-terminated path.
                    let made = check(unsafe { libc::mknod(c.as_ptr(), file_type | 0o600, rdev) });
                    match made {
                        Err(err)
                            if file_type != libc::S_IFIFO
                                && err.raw_os_error() == Some(libc::EPERM) =>
                        {
                            self.counts.devices_skipped += 1;
                            return Ok(());
                        }
                        other => other?,
                    }
                    if owners {
                        // SAFETY: NUL-terminated path.
                        check(unsafe { libc::lchown(c.as_ptr(), meta.uid, meta.gid) })?;
                    }
                    // SAFETY: NUL-terminated path (a FIFO or device is not a symlink).
                    check(unsafe { libc::chmod(c.as_ptr(), meta.mode as libc::mode_t) })?;
                    self.set_xattrs(None, &c, &meta)?;
                    self.set_times_nofollow(&c, &meta)?;
                }
            }
            Ok(())
        })();
        result.map_err(io)?;
        self.counts.entries += 1;
        Ok(())
    }

    fn set_times_nofollow(&self, path: &CString, meta: &Meta) -> std::io::Result<()> {
        let times = timespec(meta);
        // SAFETY: NUL-terminated path and two timespecs.
        check(unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                path.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    }

    /// The path of a hardlink's original: a regular file reached through directories only
    /// (never through a symlink, which could lead out of the target).
    fn checked_link_target(&self, target: &[u8]) -> std::io::Result<PathBuf> {
        let mut path = self.target.clone();
        let names: Vec<&[u8]> = target.split(|b| *b == b'/').collect();
        for (at, name) in names.iter().enumerate() {
            path.push(std::ffi::OsStr::from_bytes(name));
            let stat = std::fs::symlink_metadata(&path)?;
            let last = at + 1 == names.len();
            if (last && !stat.is_file()) || (!last && !stat.is_dir()) {
                return Err(std::io::Error::other(format!(
                    "a hardlink's target {:?} is not a file restored before it",
                    String::from_utf8_lossy(target)
                )));
            }
        }
        Ok(path)
    }

    /// Modes and times of directories, deepest first: the last thing a restore does.
    fn finish_directories(&mut self) -> Result<(), ExtractError> {
        while let Some((path, meta)) = self.directories.pop() {
            let c = c_path(&path).map_err(self.io(&path))?;
            // SAFETY: NUL-terminated path; a directory created (or checked) by this restore.
            check(unsafe { libc::chmod(c.as_ptr(), meta.mode as libc::mode_t) })
                .and_then(|()| self.set_times_nofollow(&c, &meta))
                .map_err(self.io(&path))?;
        }
        Ok(())
    }
}

/// Recreates the tree stream read from `input` under `target` (created when missing).
pub fn extract(
    input: impl Read,
    target: &Path,
    options: ExtractOptions,
) -> Result<ExtractCounts, ExtractError> {
    std::fs::create_dir_all(target).map_err(|source| ExtractError::Io {
        path: target.display().to_string(),
        source,
    })?;
    let mut extractor = Extractor {
        target: target.to_path_buf(),
        options,
        counts: ExtractCounts::default(),
        directories: Vec::new(),
        buffer: vec![0u8; 1024 * 1024],
    };
    let mut decoder = Decoder::new(input);
    while let Record::Entry(entry) = decoder.next_record()? {
        let mut data = decoder.data();
        extractor.entry(entry, &mut data)?;
        // Whatever the entry did not read (nothing, for a well-formed stream) is drained so
        // the next record starts where it should.
        std::io::copy(&mut data, &mut std::io::sink()).map_err(TreeError::from)?;
    }
    extractor.finish_directories()?;
    Ok(extractor.counts)
}
