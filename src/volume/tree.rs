//! The tree stream's record format (docs/repository-format.md, "Tree streams"): its limits,
//! pure encoding and [`check_entry`], the one rule book the encoder and the decoder
//! (`decode.rs`) both apply, so a backup never writes a stream its restore would refuse.
//! No file system access here.
//!
//! A stream is `MAGIC`, then one record per entry in depth-first order with siblings sorted by
//! name bytes (the root directory first, with the empty path), then an end record. A regular
//! file's data follows its record: the bytes of its data extents, holes left out.

/// The first bytes of every tree stream (format version 1).
pub const MAGIC: &[u8; 8] = b"RWTREE1\n";

/// Longest name of one path component (Linux NAME_MAX).
pub const NAME_MAX: usize = 255;
/// Longest relative path or symlink target (Linux PATH_MAX).
pub const PATH_MAX: usize = 4096;
/// Most extended attributes on one entry.
pub const XATTRS_MAX: u64 = 4096;
/// Largest extended attribute value (Linux XATTR_SIZE_MAX).
pub const XATTR_VALUE_MAX: usize = 65536;
/// Most bytes of extended attributes (names and values together) on one entry: what one
/// entry in flight may hold, whatever its count.
pub const XATTR_BYTES_MAX: usize = 1 << 20;
/// Most data extents of one file (`EXTENTS_MAX` in the format document). A file with more
/// data runs is recorded with runs joined across its smallest holes ([`limit_extents`]).
pub const EXTENTS_MAX: u64 = 1 << 16;
/// Largest device major number: Linux keeps 12 bits of it (`mknod` takes a 32-bit `dev_t`).
pub const DEVICE_MAJOR_MAX: u64 = (1 << 12) - 1;
/// Largest device minor number: Linux keeps 20 bits of it (MINORBITS).
pub const DEVICE_MINOR_MAX: u64 = (1 << 20) - 1;

/// Record kinds, one byte each.
pub(super) mod kind {
    pub const DIRECTORY: u8 = b'D';
    pub const FILE: u8 = b'F';
    pub const SYMLINK: u8 = b'L';
    pub const HARDLINK: u8 = b'H';
    pub const FIFO: u8 = b'P';
    pub const CHAR_DEVICE: u8 = b'C';
    pub const BLOCK_DEVICE: u8 = b'B';
    pub const END: u8 = b'E';
}

/// A run of file data; everything of the file outside its extents is a hole (zeros).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Where the run starts in the file.
    pub offset: u64,
    /// Its length in bytes (never 0).
    pub length: u64,
}

/// What every entry carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits with setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch (may be negative).
    pub mtime_sec: i64,
    /// Nanoseconds of the modification time (< 1e9).
    pub mtime_nsec: u32,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The type of an entry and what only that type carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory; its entries follow it.
    Directory,
    /// A regular file of `size` bytes whose data (the extents' bytes, in order) follows.
    File {
        /// Apparent size.
        size: u64,
        /// Data runs, sorted, non-overlapping, within `size`.
        extents: Vec<Extent>,
    },
    /// A symbolic link.
    Symlink {
        /// Its target, as stored (not resolved).
        target: Vec<u8>,
    },
    /// A second name of a regular file recorded earlier in the stream.
    Hardlink {
        /// The path of that earlier file record.
        target: Vec<u8>,
    },
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice {
        /// Major number.
        major: u64,
        /// Minor number.
        minor: u64,
    },
    /// A block device.
    BlockDevice {
        /// Major number.
        major: u64,
        /// Minor number.
        minor: u64,
    },
}

/// One entry of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative path, components joined by `/`; empty for the root directory.
    pub path: Vec<u8>,
    /// Mode, owner, time, xattrs.
    pub meta: Meta,
    /// Type-specific fields.
    pub kind: Kind,
}

impl Entry {
    /// Bytes of file data that follow this entry's record.
    pub fn data_len(&self) -> u64 {
        match &self.kind {
            Kind::File { extents, .. } => extents.iter().map(|e| e.length).sum(),
            _ => 0,
        }
    }
}

/// What the end record states, so a truncated stream is never taken for a whole one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Entries recorded (the root directory included).
    pub entries: u64,
    /// File data bytes recorded (extents only).
    pub data_bytes: u64,
}

/// File data from this size up is chunked on its own: the writer cuts before the file's record
/// and after its data, so a changed file of a few dozen KiB costs about itself on day 2.
pub const OWN_CHUNKS_FROM: u64 = 16 * 1024;
/// Smaller entries are grouped about this many to a chunk.
pub const GROUP_ENTRIES: u64 = 8;

/// Where the writer should end a chunk before this entry's record (a writer's choice the
/// format does not see): before a file with at least [`OWN_CHUNKS_FROM`] bytes of data, after
/// one (`after_own_chunks`), and before an entry whose path's FNV-1a hash is 0 modulo
/// [`GROUP_ENTRIES`]. That depends on the entry's own path only, so a changed file changes its
/// group's chunk and no other: a day-2 backup stores about the changed groups.
pub fn cut_before(path: &[u8], data_len: u64, after_own_chunks: bool) -> bool {
    after_own_chunks || data_len >= OWN_CHUNKS_FROM || fnv1a(path).is_multiple_of(GROUP_ENTRIES)
}

/// FNV-1a, 64 bits.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Unsigned LEB128.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Signed values as unsigned: 0, -1, 1, -2, … → 0, 1, 2, 3, …
pub(super) fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

pub(super) fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Appends the stream's first bytes.
pub fn encode_start(out: &mut Vec<u8>) {
    out.extend_from_slice(MAGIC);
}

/// Appends an entry's record; a file's data (its extents' bytes) must follow it.
pub fn encode_entry(out: &mut Vec<u8>, entry: &Entry) {
    let Entry { path, meta, kind } = entry;
    out.push(match kind {
        Kind::Directory => kind::DIRECTORY,
        Kind::File { .. } => kind::FILE,
        Kind::Symlink { .. } => kind::SYMLINK,
        Kind::Hardlink { .. } => kind::HARDLINK,
        Kind::Fifo => kind::FIFO,
        Kind::CharDevice { .. } => kind::CHAR_DEVICE,
        Kind::BlockDevice { .. } => kind::BLOCK_DEVICE,
    });
    put_bytes(out, path);
    let Meta {
        mode,
        uid,
        gid,
        mtime_sec,
        mtime_nsec,
        xattrs,
    } = meta;
    put_varint(out, u64::from(*mode));
    put_varint(out, u64::from(*uid));
    put_varint(out, u64::from(*gid));
    put_varint(out, zigzag(*mtime_sec));
    put_varint(out, u64::from(*mtime_nsec));
    put_varint(out, xattrs.len() as u64);
    for (name, value) in xattrs {
        put_bytes(out, name);
        put_bytes(out, value);
    }
    match kind {
        Kind::Directory | Kind::Fifo => {}
        Kind::File { size, extents } => {
            put_varint(out, *size);
            put_varint(out, extents.len() as u64);
            for extent in extents {
                put_varint(out, extent.offset);
                put_varint(out, extent.length);
            }
        }
        Kind::Symlink { target } | Kind::Hardlink { target } => put_bytes(out, target),
        Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
            put_varint(out, *major);
            put_varint(out, *minor);
        }
    }
}

/// Appends the end record.
pub fn encode_end(out: &mut Vec<u8>, totals: Totals) {
    out.push(kind::END);
    put_varint(out, totals.entries);
    put_varint(out, totals.data_bytes);
}

/// Why a stream does not decode.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// Reading the stream failed (or it ended early).
    #[error("reading the tree stream: {0}")]
    Io(#[from] std::io::Error),
    /// The stream breaks a rule of the format.
    #[error("the tree stream is malformed at entry {entry}: {reason}")]
    Malformed {
        /// How many entries were read before.
        entry: u64,
        /// What is wrong.
        reason: String,
    },
}

impl TreeError {
    /// A short, bounded label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Io(_) => "io",
            Self::Malformed { .. } => "malformed-stream",
        }
    }
}

/// Checks one path: empty (the root) or `/`-joined names that are not empty, `.` or `..` and
/// hold no NUL, each at most [`NAME_MAX`] bytes, the whole at most [`PATH_MAX`].
pub fn check_path(path: &[u8]) -> Result<(), String> {
    if path.is_empty() {
        return Ok(());
    }
    if path.len() > PATH_MAX {
        return Err(format!("a path of {} bytes is too long", path.len()));
    }
    for name in path.split(|b| *b == b'/') {
        if name.is_empty() || name == b"." || name == b".." {
            return Err(format!(
                "path {:?} has an empty, . or .. component",
                String::from_utf8_lossy(path)
            ));
        }
        if name.len() > NAME_MAX || name.contains(&0) {
            return Err(format!(
                "path {:?} has a name too long or with a NUL byte",
                String::from_utf8_lossy(path)
            ));
        }
    }
    Ok(())
}

/// The parent of a non-root path (`b""` for a top-level entry) and the last name.
pub fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(at) => (&path[..at], &path[at + 1..]),
        None => (b"", path),
    }
}

/// Checks everything the format says of one entry apart from its place in the stream (which
/// only a decoder sees): path, mode and time ranges, xattrs, extents, link targets, device
/// numbers. The encoder runs it before writing an entry and the decoder after reading one.
pub fn check_entry(entry: &Entry) -> Result<(), String> {
    let Entry { path, meta, kind } = entry;
    check_path(path)?;
    let Meta {
        mode,
        uid: _,
        gid: _,
        mtime_sec: _,
        mtime_nsec,
        xattrs,
    } = meta;
    if *mode > 0o7777 {
        return Err(format!("mode {mode:#o} is out of range"));
    }
    if *mtime_nsec > 999_999_999 {
        return Err(format!("nanoseconds {mtime_nsec} are out of range"));
    }
    if xattrs.len() as u64 > XATTRS_MAX {
        return Err(format!(
            "{} extended attributes (at most {XATTRS_MAX})",
            xattrs.len()
        ));
    }
    let mut total = 0usize;
    for (at, (name, value)) in xattrs.iter().enumerate() {
        if name.is_empty() || name.len() > NAME_MAX || name.contains(&0) {
            return Err("an xattr name empty, too long or with a NUL byte".into());
        }
        if value.len() > XATTR_VALUE_MAX {
            return Err(format!("an xattr value of {} bytes", value.len()));
        }
        if at > 0 && xattrs[at - 1].0 >= *name {
            return Err("xattrs not sorted by name".into());
        }
        total += name.len() + value.len();
    }
    if total > XATTR_BYTES_MAX {
        return Err(format!(
            "{total} bytes of extended attributes (at most {XATTR_BYTES_MAX})"
        ));
    }
    match kind {
        Kind::Directory | Kind::Fifo => Ok(()),
        Kind::File { size, extents } => check_extents(*size, extents),
        Kind::Symlink { target } if target.len() > PATH_MAX => {
            Err(format!("a symlink target of {} bytes", target.len()))
        }
        Kind::Symlink { .. } => Ok(()),
        Kind::Hardlink { target } => {
            check_path(target)?;
            if target.is_empty() || target == path {
                return Err("a hardlink to the root or to itself".into());
            }
            Ok(())
        }
        Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
            if *major > DEVICE_MAJOR_MAX || *minor > DEVICE_MINOR_MAX {
                return Err(format!("device number {major}:{minor} is out of range"));
            }
            Ok(())
        }
    }
}

/// At most [`EXTENTS_MAX`] runs, each non-empty, sorted, not overlapping, within `size`.
pub fn check_extents(size: u64, extents: &[Extent]) -> Result<(), String> {
    if extents.len() as u64 > EXTENTS_MAX {
        return Err(format!("{} extents (at most {EXTENTS_MAX})", extents.len()));
    }
    let mut end = 0u64;
    for extent in extents {
        let extent_end = extent.offset.checked_add(extent.length);
        if extent.length == 0 || extent.offset < end || extent_end.is_none_or(|e| e > size) {
            return Err("extents empty, unsorted, overlapping or beyond the file's size".into());
        }
        end = extent_end.unwrap_or(size);
    }
    Ok(())
}

/// Joins runs that touch, then, while there are more than `max`, runs across the smallest
/// holes (their zeros become data): a fragmented sparse file is recorded with at most `max`
/// runs instead of being refused on restore. `extents` must be sorted and not overlap.
pub fn limit_extents(extents: Vec<Extent>, max: usize) -> Vec<Extent> {
    let mut merged: Vec<Extent> = Vec::with_capacity(extents.len().min(max.max(1) * 2));
    for extent in extents.into_iter().filter(|e| e.length > 0) {
        match merged.last_mut() {
            Some(last) if last.offset + last.length == extent.offset => {
                last.length += extent.length;
            }
            _ => merged.push(extent),
        }
    }
    if merged.len() <= max.max(1) {
        return merged;
    }
    // Join across every hole no larger than the (len - max)-th smallest: at least enough.
    let mut holes: Vec<u64> = merged
        .windows(2)
        .map(|pair| pair[1].offset - (pair[0].offset + pair[0].length))
        .collect();
    let excess = merged.len() - max.max(1);
    let (_, threshold, _) = holes.select_nth_unstable(excess - 1);
    let threshold = *threshold;
    let mut joined: Vec<Extent> = Vec::with_capacity(max);
    for extent in merged {
        match joined.last_mut() {
            Some(last) if extent.offset - (last.offset + last.length) <= threshold => {
                last.length = extent.offset + extent.length - last.offset;
            }
            _ => joined.push(extent),
        }
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(extents: Vec<Extent>, size: u64) -> Entry {
        Entry {
            path: b"f".to_vec(),
            meta: Meta::default(),
            kind: Kind::File { size, extents },
        }
    }

    #[test]
    fn a_file_with_more_data_runs_than_the_format_allows_is_joined_across_its_smallest_holes() {
        let e = |offset, length| Extent { offset, length };
        assert_eq!(
            limit_extents(vec![e(0, 4), e(4, 4), e(10, 0), e(12, 2), e(14, 1)], 10),
            vec![e(0, 8), e(12, 3)],
            "touching runs are joined and empty ones dropped"
        );
        // Every other 4 KiB block written, with one larger hole: 3 × EXTENTS_MAX runs.
        let mut runs = Vec::new();
        for i in 0..3 * EXTENTS_MAX {
            let gap = if i == EXTENTS_MAX { 1 << 30 } else { 4096 };
            let offset = runs
                .last()
                .map_or(0, |r: &Extent| r.offset + r.length + gap);
            runs.push(e(offset, 4096));
        }
        let size = runs.last().map_or(0, |r| r.offset + r.length);
        assert!(check_entry(&file(runs.clone(), size)).is_err());
        let limited = limit_extents(runs.clone(), EXTENTS_MAX as usize);
        assert!(limited.len() as u64 <= EXTENTS_MAX, "{}", limited.len());
        check_entry(&file(limited.clone(), size)).expect("restorable");
        // Every byte of data is still covered, and the large hole stays a hole.
        for run in &runs {
            assert!(
                limited
                    .iter()
                    .any(|l| l.offset <= run.offset
                        && run.offset + run.length <= l.offset + l.length)
            );
        }
        let data: u64 = limited.iter().map(|l| l.length).sum();
        assert!(
            data < size - (1 << 29),
            "the big hole was kept: {data} of {size}"
        );
    }

    #[test]
    fn an_entry_the_decoder_would_refuse_is_refused_by_the_shared_check() {
        let mut many = file(Vec::new(), 0);
        many.meta.xattrs = (0..=XATTRS_MAX)
            .map(|i| (format!("user.{i:06}").into_bytes(), Vec::new()))
            .collect();
        assert!(
            check_entry(&many)
                .expect_err("too many")
                .contains("extended attributes")
        );
        let mut heavy = file(Vec::new(), 0);
        heavy.meta.xattrs = (0..20)
            .map(|i| {
                (
                    format!("user.{i:02}").into_bytes(),
                    vec![0u8; XATTR_VALUE_MAX],
                )
            })
            .collect();
        assert!(
            check_entry(&heavy)
                .expect_err("too big")
                .contains("bytes of extended")
        );
        let device = Entry {
            path: b"d".to_vec(),
            meta: Meta::default(),
            kind: Kind::CharDevice {
                major: DEVICE_MAJOR_MAX + 1,
                minor: 0,
            },
        };
        assert!(
            check_entry(&device)
                .expect_err("range")
                .contains("device number")
        );
    }
}
