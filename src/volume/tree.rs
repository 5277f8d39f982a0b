//! The tree stream's record format (docs/repository-format.md, "Tree streams"): pure encoding
//! and a checking decoder over any `Read`. No file system access here.
//!
//! A stream is `MAGIC`, then one record per entry in depth-first order with siblings sorted by
//! name bytes (the root directory first, with the empty path), then an end record. A regular
//! file's data follows its record: the bytes of its data extents, holes left out.

use std::io::Read;

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
/// Most data extents of one file.
pub const EXTENTS_MAX: u64 = 1 << 20;

/// Record kinds, one byte each.
mod kind {
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
fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
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

/// One decoded record.
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    /// An entry; for a file, read its data next with [`Decoder::data`].
    Entry(Entry),
    /// The end record, already checked against what was read.
    End(Totals),
}

/// Reads records back and enforces the format's structure: the root first, every entry's
/// parent a directory recorded before it, siblings in strictly increasing name order (so no
/// name twice), sane sizes. An extractor relying on it never writes outside its target.
pub struct Decoder<R> {
    input: R,
    started: bool,
    ended: bool,
    /// Directories that are ancestors of the next entry, each with its last child's name.
    open_dirs: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// File data of the last file record not yet read.
    pending_data: u64,
    totals: Totals,
}

impl<R: Read> Decoder<R> {
    /// A decoder of `input`, which must start with [`MAGIC`].
    pub fn new(input: R) -> Self {
        Self {
            input,
            started: false,
            ended: false,
            open_dirs: Vec::new(),
            pending_data: 0,
            totals: Totals::default(),
        }
    }

    fn malformed(&self, reason: impl Into<String>) -> TreeError {
        TreeError::Malformed {
            entry: self.totals.entries,
            reason: reason.into(),
        }
    }

    fn byte(&mut self) -> Result<u8, TreeError> {
        let mut one = [0u8; 1];
        self.input.read_exact(&mut one)?;
        Ok(one[0])
    }

    fn varint(&mut self) -> Result<u64, TreeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(self.malformed("a varint overflows 64 bits"));
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.malformed("a varint is longer than 10 bytes"))
    }

    fn small(&mut self, max: u64, what: &str) -> Result<u32, TreeError> {
        let value = self.varint()?;
        if value > max {
            return Err(self.malformed(format!("{what} {value} is out of range")));
        }
        Ok(value as u32)
    }

    fn bytes(&mut self, max: usize, what: &str) -> Result<Vec<u8>, TreeError> {
        let len = self.varint()?;
        if len > max as u64 {
            return Err(self.malformed(format!("{what} of {len} bytes exceeds {max}")));
        }
        let mut out = vec![0u8; len as usize];
        self.input.read_exact(&mut out)?;
        Ok(out)
    }

    /// The next record; a file's data must be read (or skipped) with [`Decoder::data`] first.
    pub fn next_record(&mut self) -> Result<Record, TreeError> {
        if self.pending_data > 0 {
            return Err(self.malformed("the previous file's data was not read"));
        }
        if self.ended {
            return Err(self.malformed("read past the end record"));
        }
        if !self.started {
            let mut magic = [0u8; MAGIC.len()];
            self.input.read_exact(&mut magic)?;
            if &magic != MAGIC {
                return Err(self.malformed("not a tree stream (wrong magic)"));
            }
            self.started = true;
        }
        let tag = self.byte()?;
        if tag == kind::END {
            let stated = Totals {
                entries: self.varint()?,
                data_bytes: self.varint()?,
            };
            if stated != self.totals {
                return Err(self.malformed(format!(
                    "the end record states {stated:?}, the stream held {:?}",
                    self.totals
                )));
            }
            if self.totals.entries == 0 {
                return Err(self.malformed("no root directory"));
            }
            let mut trailing = [0u8; 1];
            if self.input.read(&mut trailing)? != 0 {
                return Err(self.malformed("bytes after the end record"));
            }
            self.ended = true;
            return Ok(Record::End(self.totals));
        }
        let path = self.bytes(PATH_MAX, "a path")?;
        check_path(&path).map_err(|reason| self.malformed(reason))?;
        let mode = self.small(0o7777, "mode")?;
        let uid = self.small(u64::from(u32::MAX), "uid")?;
        let gid = self.small(u64::from(u32::MAX), "gid")?;
        let mtime_sec = unzigzag(self.varint()?);
        let mtime_nsec = self.small(999_999_999, "nanoseconds")?;
        let count = self.varint()?;
        if count > XATTRS_MAX {
            return Err(self.malformed(format!("{count} extended attributes")));
        }
        let mut xattrs = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let name = self.bytes(NAME_MAX, "an xattr name")?;
            let value = self.bytes(XATTR_VALUE_MAX, "an xattr value")?;
            if name.is_empty() || name.contains(&0) {
                return Err(self.malformed("an empty xattr name or one with a NUL byte"));
            }
            if xattrs
                .last()
                .is_some_and(|(last, _): &(Vec<u8>, Vec<u8>)| *last >= name)
            {
                return Err(self.malformed("xattrs not sorted by name"));
            }
            xattrs.push((name, value));
        }
        let kind = match tag {
            kind::DIRECTORY => Kind::Directory,
            kind::FIFO => Kind::Fifo,
            kind::FILE => {
                let size = self.varint()?;
                let count = self.varint()?;
                if count > EXTENTS_MAX {
                    return Err(self.malformed(format!("{count} extents")));
                }
                let mut extents = Vec::with_capacity(count as usize);
                let mut end = 0u64;
                for _ in 0..count {
                    let extent = Extent {
                        offset: self.varint()?,
                        length: self.varint()?,
                    };
                    let extent_end = extent.offset.checked_add(extent.length);
                    if extent.length == 0
                        || extent.offset < end
                        || extent_end.is_none_or(|e| e > size)
                    {
                        return Err(self.malformed(
                            "extents empty, unsorted, overlapping or beyond the file's size",
                        ));
                    }
                    end = extent_end.unwrap_or(size);
                    extents.push(extent);
                }
                Kind::File { size, extents }
            }
            kind::SYMLINK => Kind::Symlink {
                target: self.bytes(PATH_MAX, "a symlink target")?,
            },
            kind::HARDLINK => {
                let target = self.bytes(PATH_MAX, "a hardlink target")?;
                check_path(&target).map_err(|reason| self.malformed(reason))?;
                if target.is_empty() || target == path {
                    return Err(self.malformed("a hardlink to the root or to itself"));
                }
                Kind::Hardlink { target }
            }
            kind::CHAR_DEVICE | kind::BLOCK_DEVICE => {
                let major = self.varint()?;
                let minor = self.varint()?;
                if tag == kind::CHAR_DEVICE {
                    Kind::CharDevice { major, minor }
                } else {
                    Kind::BlockDevice { major, minor }
                }
            }
            other => return Err(self.malformed(format!("unknown record kind {other:#04x}"))),
        };
        let entry = Entry {
            path,
            meta: Meta {
                mode,
                uid,
                gid,
                mtime_sec,
                mtime_nsec,
                xattrs,
            },
            kind,
        };
        self.place(&entry)?;
        self.pending_data = entry.data_len();
        self.totals.entries += 1;
        self.totals.data_bytes += self.pending_data;
        Ok(Record::Entry(entry))
    }

    /// Checks that the entry comes where the format says it must.
    fn place(&mut self, entry: &Entry) -> Result<(), TreeError> {
        if entry.path.is_empty() {
            if self.totals.entries != 0 || entry.kind != Kind::Directory {
                return Err(self.malformed("the empty path is only for the root directory, first"));
            }
            self.open_dirs.push((Vec::new(), None));
            return Ok(());
        }
        if self.totals.entries == 0 {
            return Err(self.malformed("the first entry must be the root directory"));
        }
        let (parent, name) = split_parent(&entry.path);
        while self
            .open_dirs
            .last()
            .is_some_and(|(dir, _)| dir.as_slice() != parent)
        {
            self.open_dirs.pop();
        }
        let Some((_, last_child)) = self.open_dirs.last_mut() else {
            return Err(self.malformed(format!(
                "{:?} does not follow its parent directory",
                String::from_utf8_lossy(&entry.path)
            )));
        };
        if last_child.as_deref().is_some_and(|last| last >= name) {
            return Err(self.malformed(format!(
                "{:?} is not after its previous sibling in name order",
                String::from_utf8_lossy(&entry.path)
            )));
        }
        *last_child = Some(name.to_vec());
        if entry.kind == Kind::Directory {
            self.open_dirs.push((entry.path.clone(), None));
        }
        Ok(())
    }

    /// The data of the file record just returned: exactly its extents' bytes, in order.
    pub fn data(&mut self) -> std::io::Take<&mut R> {
        let len = std::mem::take(&mut self.pending_data);
        (&mut self.input).take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(mode: u32) -> Meta {
        Meta {
            mode,
            uid: 1000,
            gid: 100,
            mtime_sec: 1_700_000_000,
            mtime_nsec: 123_456_789,
            xattrs: Vec::new(),
        }
    }

    fn entry(path: &[u8], kind: Kind) -> Entry {
        Entry {
            path: path.to_vec(),
            meta: meta(0o644),
            kind,
        }
    }

    /// Encodes entries (files get `fill` bytes as data) and the end record.
    fn encode(entries: &[Entry]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_start(&mut out);
        let mut totals = Totals::default();
        for entry in entries {
            encode_entry(&mut out, entry);
            let len = entry.data_len();
            out.extend(std::iter::repeat_n(b'x', len as usize));
            totals.entries += 1;
            totals.data_bytes += len;
        }
        encode_end(&mut out, totals);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Vec<(Entry, Vec<u8>)>, TreeError> {
        let mut decoder = Decoder::new(bytes);
        let mut out = Vec::new();
        loop {
            match decoder.next_record()? {
                Record::Entry(entry) => {
                    let mut data = Vec::new();
                    decoder.data().read_to_end(&mut data)?;
                    out.push((entry, data));
                }
                Record::End(_) => return Ok(out),
            }
        }
    }

    fn every_kind() -> Vec<Entry> {
        let root = Entry {
            path: Vec::new(),
            meta: meta(0o1777),
            kind: Kind::Directory,
        };
        let mut with_xattrs = entry(
            b"a/file",
            Kind::File {
                size: 10,
                extents: vec![Extent {
                    offset: 0,
                    length: 10,
                }],
            },
        );
        with_xattrs.meta.xattrs = vec![
            (b"user.a".to_vec(), b"1".to_vec()),
            (b"user.b".to_vec(), Vec::new()),
        ];
        with_xattrs.meta.mode = 0o4755;
        let mut old = entry(b"a/old", Kind::Fifo);
        old.meta.mtime_sec = -86_400;
        vec![
            root,
            entry(b"a", Kind::Directory),
            entry(b"a/block", Kind::BlockDevice { major: 8, minor: 1 }),
            entry(b"a/char", Kind::CharDevice { major: 1, minor: 3 }),
            with_xattrs,
            entry(
                b"a/link",
                Kind::Hardlink {
                    target: b"a/file".to_vec(),
                },
            ),
            old,
            entry(
                b"a/sparse",
                Kind::File {
                    size: 1 << 30,
                    extents: vec![
                        Extent {
                            offset: 4096,
                            length: 3,
                        },
                        Extent {
                            offset: 1 << 29,
                            length: 2,
                        },
                    ],
                },
            ),
            entry(
                b"a/sym",
                Kind::Symlink {
                    target: b"../elsewhere/\xfe".to_vec(),
                },
            ),
            entry(
                b"a/\xff\nodd",
                Kind::File {
                    size: 0,
                    extents: Vec::new(),
                },
            ),
            entry(b"b", Kind::Directory),
            entry(b"b/c", Kind::Directory),
            entry(
                b"b/c/d",
                Kind::File {
                    size: 1,
                    extents: vec![Extent {
                        offset: 0,
                        length: 1,
                    }],
                },
            ),
            entry(b"z", Kind::Directory),
        ]
    }

    #[test]
    fn every_entry_kind_survives_an_encode_decode_roundtrip() {
        let entries = every_kind();
        let decoded = decode(&encode(&entries)).expect("decodes");
        let got: Vec<Entry> = decoded.iter().map(|(e, _)| e.clone()).collect();
        assert_eq!(got, entries);
        for (entry, data) in decoded {
            assert_eq!(data.len() as u64, entry.data_len(), "{entry:?}");
        }
    }

    #[test]
    fn the_same_tree_always_encodes_to_the_same_bytes() {
        assert_eq!(encode(&every_kind()), encode(&every_kind()));
    }

    #[test]
    fn chunks_are_cut_around_large_files_and_before_about_one_entry_in_eight() {
        assert!(cut_before(b"x", OWN_CHUNKS_FROM, false));
        assert!(cut_before(b"x", 0, true));
        let paths: Vec<Vec<u8>> = (0..10_000).map(|i| format!("d/{i}").into_bytes()).collect();
        let cuts = paths.iter().filter(|p| cut_before(p, 100, false)).count();
        assert!(
            (1_000..1_500).contains(&cuts),
            "{cuts} cuts in 10,000 entries"
        );
        // The choice depends on the path alone, not on what came before.
        assert_eq!(
            cut_before(b"d/7", 10, false),
            cut_before(b"d/7", 10_000, false)
        );
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn varints_and_signed_times_roundtrip_at_their_limits() {
        for value in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            let mut decoder = Decoder::new(out.as_slice());
            assert_eq!(decoder.varint().expect("varint"), value);
        }
        for time in [0, -1, 1, i64::MIN, i64::MAX, -1_000_000_000_000] {
            assert_eq!(unzigzag(zigzag(time)), time);
        }
        let too_long = [0xffu8; 11];
        assert!(Decoder::new(&too_long[..]).varint().is_err());
    }

    fn refused(entries: &[Entry]) -> String {
        match decode(&encode(entries)) {
            Ok(_) => panic!("accepted {entries:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn siblings_out_of_name_order_or_named_twice_are_refused() {
        let mut entries = every_kind();
        entries.swap(2, 3);
        assert!(refused(&entries).contains("name order"));
        let mut twice = every_kind();
        twice.insert(2, twice[2].clone());
        assert!(refused(&twice).contains("name order"));
    }

    #[test]
    fn an_entry_whose_parent_is_not_an_open_directory_is_refused() {
        let mut root = every_kind();
        root.truncate(1);
        // Under a symlink: an extractor would otherwise write through it.
        let mut through_symlink = root.clone();
        through_symlink.push(entry(
            b"s",
            Kind::Symlink {
                target: b"/etc".to_vec(),
            },
        ));
        through_symlink.push(entry(b"s/passwd", Kind::Fifo));
        assert!(refused(&through_symlink).contains("does not follow its parent"));
        // Back into a directory already closed.
        let mut reopened = root.clone();
        reopened.push(entry(b"a", Kind::Directory));
        reopened.push(entry(b"b", Kind::Directory));
        reopened.push(entry(b"a/x", Kind::Fifo));
        assert!(refused(&reopened).contains("does not follow its parent"));
    }

    #[test]
    fn paths_that_climb_out_or_are_absolute_are_refused() {
        for bad in [&b"../x"[..], b"/etc", b"a//b", b"a/./b", b"a/", b"a\0b"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_path(b"a/\xff\nb").is_ok());
        let mut root = every_kind();
        root.truncate(1);
        root.push(entry(b"..", Kind::Fifo));
        assert!(refused(&root).contains("component"));
    }

    #[test]
    fn a_stream_that_does_not_start_with_the_root_directory_is_refused() {
        let entries = vec![entry(b"a", Kind::Directory)];
        assert!(refused(&entries).contains("root directory"));
        let empty = encode(&[]);
        assert!(decode(&empty).is_err());
    }

    #[test]
    fn overlapping_or_oversized_extents_are_refused() {
        let mut root = every_kind();
        root.truncate(1);
        for extents in [
            vec![
                Extent {
                    offset: 0,
                    length: 5,
                },
                Extent {
                    offset: 4,
                    length: 1,
                },
            ],
            vec![Extent {
                offset: 8,
                length: 5,
            }],
            vec![Extent {
                offset: 0,
                length: 0,
            }],
        ] {
            let mut entries = root.clone();
            entries.push(entry(b"f", Kind::File { size: 10, extents }));
            assert!(refused(&entries).contains("extents"));
        }
    }

    #[test]
    fn a_truncated_stream_or_a_wrong_end_record_is_refused() {
        let bytes = encode(&every_kind());
        for cut in [bytes.len() - 1, bytes.len() / 2, 9] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut lied = encode(&every_kind());
        let end = lied.iter().rposition(|b| *b == kind::END).expect("end");
        lied.truncate(end);
        encode_end(
            &mut lied,
            Totals {
                entries: 3,
                data_bytes: 0,
            },
        );
        assert!(
            decode(&lied)
                .expect_err("totals differ")
                .to_string()
                .contains("end record")
        );
        let mut trailing = encode(&every_kind());
        trailing.push(0);
        assert!(decode(&trailing).is_err());
    }
}
