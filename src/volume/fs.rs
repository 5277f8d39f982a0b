//! Directory file descriptors and the `*at` calls on them, shared by backup and restore.
//!
//! Neither side ever hands the kernel a path of more than one name below a directory it holds
//! open: every entry is reached as (open directory, one name) with `O_NOFOLLOW`, and every
//! directory is opened with `O_DIRECTORY | O_NOFOLLOW`. A symlink swapped into the tree while
//! it is read or written (a live source, or a tenant pod that mounts the restore target) is
//! therefore never followed: the call fails, or acts on the symlink itself.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A libc result as an `io::Result`.
pub fn check(result: libc::c_int) -> std::io::Result<()> {
    if result < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A name or path as a C string (names from a tree stream never hold NUL).
pub fn c_string(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(std::io::Error::other)
}

/// What `fstat` says of an entry, the fields the tree records.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub blocks: u64,
    pub nlink: u64,
    pub dev: u64,
    pub ino: u64,
    pub rdev: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
}

impl Stat {
    // The field types differ between architectures (st_nlink is 32 bits on some).
    #[allow(clippy::unnecessary_cast)]
    fn from_raw(raw: &libc::stat) -> Self {
        Self {
            mode: raw.st_mode,
            uid: raw.st_uid,
            gid: raw.st_gid,
            size: raw.st_size as u64,
            blocks: raw.st_blocks as u64,
            nlink: raw.st_nlink as u64,
            dev: raw.st_dev,
            ino: raw.st_ino,
            rdev: raw.st_rdev,
            mtime_sec: raw.st_mtime,
            mtime_nsec: raw.st_mtime_nsec,
        }
    }

    /// The `S_IFMT` bits.
    pub fn file_type(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
}

/// `fstat` of an open descriptor.
pub fn fstat(fd: RawFd) -> std::io::Result<Stat> {
    let mut raw = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `raw` is valid for one stat; fstat fills it on success.
    check(unsafe { libc::fstat(fd, raw.as_mut_ptr()) })?;
    // SAFETY: initialised by the successful call above.
    Ok(Stat::from_raw(&unsafe { raw.assume_init() }))
}

/// An open directory.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;

fn owned(fd: libc::c_int) -> std::io::Result<OwnedFd> {
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor just returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Dir {
    /// The directory at `path`, which the caller chose (a mount point): the only path resolved
    /// as a whole, and the only one that may go through a symlink.
    pub fn open_path(path: &Path) -> std::io::Result<Self> {
        let c = c_string(path.as_os_str().as_bytes())?;
        // SAFETY: a NUL-terminated path.
        let fd = owned(unsafe { libc::open(c.as_ptr(), DIR_FLAGS) })?;
        Ok(Self { fd })
    }

    /// The subdirectory `name`, refusing a symlink or anything but a directory.
    pub fn open_dir(&self, name: &CStr) -> std::io::Result<Self> {
        // SAFETY: an open directory and a NUL-terminated name.
        let fd = owned(unsafe {
            libc::openat(self.raw(), name.as_ptr(), DIR_FLAGS | libc::O_NOFOLLOW)
        })?;
        Ok(Self { fd })
    }

    /// `openat(name, flags | O_NOFOLLOW | O_CLOEXEC, mode)` as a file.
    pub fn open_file(
        &self,
        name: &CStr,
        flags: libc::c_int,
        mode: libc::mode_t,
    ) -> std::io::Result<File> {
        // SAFETY: an open directory and a NUL-terminated name.
        let fd = owned(unsafe {
            libc::openat(
                self.raw(),
                name.as_ptr(),
                flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                libc::c_uint::from(mode),
            )
        })?;
        Ok(File::from(fd))
    }

    /// The raw descriptor, for `*at` calls.
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// `fstat` of the directory itself.
    pub fn stat(&self) -> std::io::Result<Stat> {
        fstat(self.raw())
    }

    /// `fstatat(name)` without following a symlink.
    pub fn stat_at(&self, name: &CStr) -> std::io::Result<Stat> {
        let mut raw = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: an open directory, a NUL-terminated name, room for one stat.
        check(unsafe {
            libc::fstatat(
                self.raw(),
                name.as_ptr(),
                raw.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        // SAFETY: initialised by the successful call above.
        Ok(Stat::from_raw(&unsafe { raw.assume_init() }))
    }

    /// The target of the symlink `name`.
    pub fn read_link_at(&self, name: &CStr) -> std::io::Result<Vec<u8>> {
        let mut buffer = vec![0u8; 256];
        loop {
            // SAFETY: an open directory, a NUL-terminated name, a buffer valid for its length.
            let got = unsafe {
                libc::readlinkat(
                    self.raw(),
                    name.as_ptr(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                )
            };
            if got < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if (got as usize) < buffer.len() {
                buffer.truncate(got as usize);
                return Ok(buffer);
            }
            if buffer.len() > crate::volume::tree::PATH_MAX {
                return Err(std::io::Error::other(
                    "a symlink target longer than PATH_MAX",
                ));
            }
            buffer.resize(buffer.len() * 2, 0);
        }
    }

    /// `name` in this directory as a path the kernel resolves through the descriptor
    /// (`/proc/self/fd/N/name`), for the calls that have no `*at` form (the `l*xattr` family):
    /// the directory is the one held open, and the final name is not followed by `l*` calls.
    pub fn proc_path(&self, name: &CStr) -> CString {
        let mut path = format!("/proc/self/fd/{}/", self.raw()).into_bytes();
        path.extend_from_slice(name.to_bytes());
        // The name held no NUL, nor does the prefix.
        CString::new(path).unwrap_or_default()
    }

    /// The names in this directory (not `.` and `..`) with their `d_type`, unsorted.
    pub fn names(&self) -> std::io::Result<Vec<(Vec<u8>, u8)>> {
        // SAFETY: duplicating an open descriptor; the copy is owned by the DIR stream below.
        let copy = owned(unsafe { libc::fcntl(self.raw(), libc::F_DUPFD_CLOEXEC, 0) })?;
        // SAFETY: fdopendir takes ownership of the copy on success.
        let stream = unsafe { libc::fdopendir(copy.as_raw_fd()) };
        if stream.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        std::mem::forget(copy);
        // SAFETY: a fresh stream on a directory; rewind so a reused offset starts over.
        unsafe { libc::rewinddir(stream) };
        let mut names = Vec::new();
        let result = loop {
            // SAFETY: errno is thread-local; reset to tell the end from an error.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: an open stream; the entry is valid until the next readdir on it.
            let entry = unsafe { libc::readdir(stream) };
            if entry.is_null() {
                let err = std::io::Error::last_os_error();
                break if err.raw_os_error() == Some(0) {
                    Ok(())
                } else {
                    Err(err)
                };
            }
            // SAFETY: d_name is NUL-terminated within the entry.
            let (name, d_type) = unsafe {
                (
                    CStr::from_ptr((*entry).d_name.as_ptr()).to_bytes(),
                    (*entry).d_type,
                )
            };
            if name != b"." && name != b".." {
                names.push((name.to_vec(), d_type));
            }
        };
        // SAFETY: closes the stream and the copied descriptor it owns.
        unsafe { libc::closedir(stream) };
        result.map(|()| names)
    }
}
