//! Recreating a tree stream's files in an empty target directory: contents, then each
//! entry's owner (only when running as root), mode, extended attributes and time; a
//! directory gets its mode and time when the stream leaves it, so creating its entries does
//! not change them and only the open directories' metadata is held.
//!
//! Nothing is written outside the target, even while a tenant pod that mounts it swaps
//! entries for symlinks: the decoder only yields entries whose parent is a directory created
//! from the stream, and every call acts on (open directory, one name) with `O_NOFOLLOW`
//! (`fs.rs`). What a restore recreates by default is what a careful admin expects of a copy
//! into a tenant's volume (docs/volumes.md): no device nodes, no file capabilities, only
//! `user.*` and POSIX ACL attributes, setuid and setgid only when owners are restored too.

use std::ffi::{CStr, CString};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::decode::{Decoder, Record};
use super::fs::{Dir, c_string, check};
use super::tree::{Entry, Kind, Meta, TreeError, split_parent};

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The stream does not decode.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// A file system call failed.
    #[error("{path}: {source}")]
    Io {
        /// The entry's path in the tree (`.` for the target itself).
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The target already holds something (only an empty `lost+found` may be there).
    #[error(
        "{target} is not empty (it holds {found:?}): restore into an empty directory, \
         nothing is overwritten or merged"
    )]
    TargetNotEmpty {
        /// The target directory.
        target: String,
        /// One name found in it.
        found: String,
    },
    /// An entry the restore will not create as the stream says.
    #[error("{path}: {reason}")]
    Refused {
        /// The entry's path in the tree.
        path: String,
        /// Why.
        reason: String,
    },
}

impl ExtractError {
    /// A short, bounded label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Tree(err) => err.category(),
            Self::Io { .. } => "io",
            Self::TargetNotEmpty { .. } => "target-not-empty",
            Self::Refused { .. } => "refused-entry",
        }
    }
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
    /// Extended attributes not restored by choice (namespaces other than `user.*` and POSIX
    /// ACLs; `security.capability` without `--capabilities`).
    pub xattrs_left_out: u64,
    /// Devices not created (without `--devices`).
    pub devices_skipped: u64,
    /// Entries whose setuid or setgid bit was dropped because owners were not restored.
    pub setid_bits_dropped: u64,
}

/// How to restore.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExtractOptions {
    /// Set owners and groups (needs root; without it files belong to the caller and lose
    /// their setuid and setgid bits).
    pub owners: bool,
    /// Create character and block devices (needs root).
    pub devices: bool,
    /// Restore `security.capability` (file capabilities).
    pub capabilities: bool,
}

impl ExtractOptions {
    /// Owners are set when the process runs as root; devices and capabilities are not.
    pub fn for_this_process() -> Self {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        Self {
            owners: root,
            devices: false,
            capabilities: false,
        }
    }
}

/// Whether an extended attribute is restored: `user.*` and POSIX ACLs always,
/// `security.capability` when asked, nothing else (`trusted.*` and `security.*` would give
/// the volume's files powers or labels the tenant could not set itself).
pub fn xattr_restored(name: &[u8], options: &ExtractOptions) -> bool {
    name.starts_with(b"user.")
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
        || (options.capabilities && name == b"security.capability")
}

fn timespec(meta: &Meta) -> [libc::timespec; 2] {
    let time = libc::timespec {
        tv_sec: meta.mtime_sec as libc::time_t,
        tv_nsec: meta.mtime_nsec as libc::c_long,
    };
    // Access time is not recorded: it is set to the modification time.
    [time, time]
}

/// A directory the stream is inside of.
struct OpenDir {
    path: Vec<u8>,
    dir: Dir,
    meta: Meta,
    /// A `lost+found` that was there before: used, never re-owned or changed.
    reused: bool,
}

struct Extractor {
    options: ExtractOptions,
    counts: ExtractCounts,
    /// The root, then each directory the stream is inside of.
    open: Vec<OpenDir>,
    lost_found_existed: bool,
    buffer: Vec<u8>,
}

impl Extractor {
    /// The mode to set: setuid and setgid only with the owner they were meant for.
    fn mode(&mut self, meta: &Meta) -> libc::mode_t {
        if !self.options.owners && meta.mode & 0o6000 != 0 {
            self.counts.setid_bits_dropped += 1;
            return (meta.mode & !0o6000) as libc::mode_t;
        }
        meta.mode as libc::mode_t
    }

    /// Extended attributes on an open file, or on `name` of `dir` without following it.
    fn set_xattrs(
        &mut self,
        fd: Option<i32>,
        at: Option<(&Dir, &CStr)>,
        meta: &Meta,
    ) -> std::io::Result<()> {
        let path = at.map(|(dir, name)| dir.proc_path(name));
        for (name, value) in &meta.xattrs {
            if !xattr_restored(name, &self.options) {
                self.counts.xattrs_left_out += 1;
                continue;
            }
            let name = c_string(name)?;
            let (ptr, len) = (value.as_ptr().cast::<libc::c_void>(), value.len());
            // SAFETY: NUL-terminated name and path, a value valid for `len` bytes.
            let result = unsafe {
                match (fd, &path) {
                    (Some(fd), _) => libc::fsetxattr(fd, name.as_ptr(), ptr, len, 0),
                    (None, Some(path)) => {
                        libc::lsetxattr(path.as_ptr(), name.as_ptr(), ptr, len, 0)
                    }
                    (None, None) => 0,
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

    /// Mode and time of the directory the stream leaves.
    fn close_dir(&mut self) -> Result<(), ExtractError> {
        let Some(done) = self.open.pop() else {
            return Ok(());
        };
        if done.reused {
            return Ok(());
        }
        let mode = self.mode(&done.meta);
        let times = timespec(&done.meta);
        let fd = done.dir.raw();
        // SAFETY: an open directory and two timespecs.
        check(unsafe { libc::fchmod(fd, mode) })
            .and_then(|()| check(unsafe { libc::futimens(fd, times.as_ptr()) }))
            .map_err(|source| ExtractError::Io {
                path: super::source::display(&done.path),
                source,
            })
    }

    fn entry(&mut self, entry: Entry, data: &mut impl Read) -> Result<(), ExtractError> {
        let shown = super::source::display(&entry.path);
        if entry.path.is_empty() {
            let Some(root) = self.open.last() else {
                return Err(ExtractError::Refused {
                    path: shown,
                    reason: "the root twice".into(),
                });
            };
            let fd = root.dir.raw();
            let meta = entry.meta;
            let owners = self.options.owners;
            let result = (|| {
                if owners {
                    // SAFETY: an open directory.
                    check(unsafe { libc::fchown(fd, meta.uid, meta.gid) })?;
                }
                self.set_xattrs(Some(fd), None, &meta)
            })();
            result.map_err(|source| ExtractError::Io {
                path: shown.clone(),
                source,
            })?;
            if let Some(root) = self.open.last_mut() {
                root.meta = meta;
            }
            self.counts.entries += 1;
            return Ok(());
        }
        let (parent, name) = split_parent(&entry.path);
        while self.open.len() > 1 && self.open.last().is_some_and(|d| d.path != parent) {
            self.close_dir()?;
        }
        if self.open.last().is_none_or(|d| d.path != parent) {
            return Err(ExtractError::Refused {
                path: shown,
                reason: "its directory is not open (a decoder bug)".into(),
            });
        }
        let name = c_string(name).map_err(|source| ExtractError::Io {
            path: shown.clone(),
            source,
        })?;
        let at_root = self.open.len() == 1;
        let Entry { path, meta, kind } = entry;
        let created = self.create(&path, &name, at_root, meta, kind, data);
        match created {
            Ok(true) => self.counts.entries += 1,
            Ok(false) => {}
            Err(CreateError::Io(source)) => {
                return Err(ExtractError::Io {
                    path: shown,
                    source,
                });
            }
            Err(CreateError::Refused(reason)) => {
                return Err(ExtractError::Refused {
                    path: shown,
                    reason,
                });
            }
        }
        Ok(())
    }

    /// Creates one entry in the innermost open directory; false when it was skipped.
    fn create(
        &mut self,
        path: &[u8],
        name: &CStr,
        at_root: bool,
        meta: Meta,
        kind: Kind,
        data: &mut impl Read,
    ) -> Result<bool, CreateError> {
        let owners = self.options.owners;
        let Some(parent) = self.open.pop() else {
            return Err(CreateError::Refused("no open directory".into()));
        };
        let result = self.create_in(&parent, path, name, at_root, meta, kind, data, owners);
        self.open.push(parent);
        let (created, new_dir) = result?;
        if let Some(dir) = new_dir {
            self.open.push(dir);
        }
        Ok(created)
    }

    #[allow(clippy::too_many_arguments)]
    fn create_in(
        &mut self,
        parent: &OpenDir,
        path: &[u8],
        name: &CStr,
        at_root: bool,
        meta: Meta,
        kind: Kind,
        data: &mut impl Read,
        owners: bool,
    ) -> Result<(bool, Option<OpenDir>), CreateError> {
        let dir = &parent.dir;
        let times = timespec(&meta);
        let set_owner_at = |dir: &Dir| -> std::io::Result<()> {
            if owners {
                // SAFETY: an open directory and a NUL-terminated name; not followed.
                check(unsafe {
                    libc::fchownat(
                        dir.raw(),
                        name.as_ptr(),
                        meta.uid,
                        meta.gid,
                        libc::AT_SYMLINK_NOFOLLOW,
                    )
                })?;
            }
            Ok(())
        };
        let set_times_at = |dir: &Dir| -> std::io::Result<()> {
            // SAFETY: an open directory, a NUL-terminated name, two timespecs; not followed.
            check(unsafe {
                libc::utimensat(
                    dir.raw(),
                    name.as_ptr(),
                    times.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            })
        };
        match kind {
            Kind::Directory => {
                // SAFETY: an open directory and a NUL-terminated name.
                let made = check(unsafe { libc::mkdirat(dir.raw(), name.as_ptr(), 0o700) });
                let reused = match made {
                    Ok(()) => false,
                    // The volume's own lost+found, there before the restore began.
                    Err(err)
                        if err.kind() == std::io::ErrorKind::AlreadyExists
                            && at_root
                            && self.lost_found_existed
                            && name.to_bytes() == b"lost+found" =>
                    {
                        true
                    }
                    Err(err) => return Err(err.into()),
                };
                let opened = dir.open_dir(name)?;
                if !reused {
                    if owners {
                        // SAFETY: an open directory.
                        check(unsafe { libc::fchown(opened.raw(), meta.uid, meta.gid) })?;
                    }
                    self.set_xattrs(Some(opened.raw()), None, &meta)?;
                }
                let open = OpenDir {
                    path: path.to_vec(),
                    dir: opened,
                    meta,
                    reused,
                };
                Ok((true, Some(open)))
            }
            Kind::File { size, extents } => {
                let file =
                    dir.open_file(name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600)?;
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
                let fd = file.as_raw_fd();
                if owners {
                    // SAFETY: an open descriptor.
                    check(unsafe { libc::fchown(fd, meta.uid, meta.gid) })?;
                }
                // After chown, which clears setuid and setgid.
                let mode = self.mode(&meta);
                // SAFETY: an open descriptor.
                check(unsafe { libc::fchmod(fd, mode) })?;
                // After chown too, which clears file capabilities.
                self.set_xattrs(Some(fd), None, &meta)?;
                // SAFETY: an open descriptor and two timespecs.
                check(unsafe { libc::futimens(fd, times.as_ptr()) })?;
                Ok((true, None))
            }
            Kind::Symlink { target } => {
                let target = c_string(&target)?;
                // SAFETY: NUL-terminated strings and an open directory.
                check(unsafe { libc::symlinkat(target.as_ptr(), dir.raw(), name.as_ptr()) })?;
                set_owner_at(dir)?;
                self.set_xattrs(None, Some((dir, name)), &meta)?;
                set_times_at(dir)?;
                Ok((true, None))
            }
            Kind::Hardlink { target } => {
                let root = self.open.first().map(|r| &r.dir).unwrap_or(&parent.dir);
                let (holder, last) = original_of(root, &target)?;
                let from = holder.as_ref().unwrap_or(root);
                // SAFETY: open directories and NUL-terminated names; flags 0 do not follow.
                check(unsafe {
                    libc::linkat(from.raw(), last.as_ptr(), dir.raw(), name.as_ptr(), 0)
                })?;
                Ok((true, None))
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
                if file_type != libc::S_IFIFO && !self.options.devices {
                    self.counts.devices_skipped += 1;
                    return Ok((false, None));
                }
                // SAFETY: an open directory and a NUL-terminated name.
                check(unsafe { libc::mknodat(dir.raw(), name.as_ptr(), file_type | 0o600, rdev) })?;
                set_owner_at(dir)?;
                let mode = self.mode(&meta);
                // SAFETY: as above; glibc refuses (EOPNOTSUPP) rather than follow a symlink.
                check(unsafe {
                    libc::fchmodat(dir.raw(), name.as_ptr(), mode, libc::AT_SYMLINK_NOFOLLOW)
                })?;
                self.set_xattrs(None, Some((dir, name)), &meta)?;
                set_times_at(dir)?;
                Ok((true, None))
            }
        }
    }
}

enum CreateError {
    Io(std::io::Error),
    Refused(String),
}

impl From<std::io::Error> for CreateError {
    fn from(err: std::io::Error) -> Self {
        Self::Io(err)
    }
}

/// A hardlink's original: a regular file reached from the target through directories only,
/// each opened without following a symlink. (The directory holding it, when not the root,
/// and its name.)
fn original_of(root: &Dir, target: &[u8]) -> Result<(Option<Dir>, CString), CreateError> {
    let refused = || {
        CreateError::Refused(format!(
            "a hardlink's target {:?} is not a file restored before it",
            String::from_utf8_lossy(target)
        ))
    };
    let (parent, last) = split_parent(target);
    let mut holder: Option<Dir> = None;
    if !parent.is_empty() {
        for component in parent.split(|b| *b == b'/') {
            let component = c_string(component)?;
            let from = holder.as_ref().unwrap_or(root);
            holder = Some(from.open_dir(&component).map_err(|_| refused())?);
        }
    }
    let last = c_string(last)?;
    let stat = holder
        .as_ref()
        .unwrap_or(root)
        .stat_at(&last)
        .map_err(|_| refused())?;
    if stat.file_type() != libc::S_IFREG {
        return Err(refused());
    }
    Ok((holder, last))
}

/// Recreates the tree stream read from `input` in `target` (created when missing), which must
/// be empty but for a `lost+found` directory.
pub fn extract(
    input: impl Read,
    target: &Path,
    options: ExtractOptions,
) -> Result<ExtractCounts, ExtractError> {
    let at_target = |source| ExtractError::Io {
        path: target.display().to_string(),
        source,
    };
    std::fs::create_dir_all(target).map_err(at_target)?;
    let root = Dir::open_path(target).map_err(at_target)?;
    let names = root.names().map_err(at_target)?;
    let lost_found_existed = names.iter().any(|(name, _)| name == b"lost+found");
    if let Some((found, _)) = names.iter().find(|(name, _)| name != b"lost+found") {
        return Err(ExtractError::TargetNotEmpty {
            target: target.display().to_string(),
            found: String::from_utf8_lossy(found).into_owned(),
        });
    }
    let mut extractor = Extractor {
        options,
        counts: ExtractCounts::default(),
        open: vec![OpenDir {
            path: Vec::new(),
            dir: root,
            meta: Meta::default(),
            reused: false,
        }],
        lost_found_existed,
        buffer: vec![0u8; 1024 * 1024],
    };
    let mut decoder = Decoder::new(input);
    while let Record::Entry(entry) = decoder.next_record()? {
        let mut data = decoder.data();
        extractor.entry(entry, &mut data)?;
        // Whatever the entry did not read (a skipped entry's nothing, for a well-formed
        // stream) is drained so the next record starts where it should.
        std::io::copy(&mut data, &mut std::io::sink()).map_err(TreeError::from)?;
    }
    // The decoder saw the root first: every directory, the root last, gets its mode here.
    while !extractor.open.is_empty() {
        extractor.close_dir()?;
    }
    Ok(extractor.counts)
}
