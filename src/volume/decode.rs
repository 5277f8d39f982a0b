//! Reading a tree stream back: a decoder over any `Read` that enforces the format's
//! structure (the root first, parents before children, siblings in name order) and, through
//! [`check_entry`], every rule on the entries themselves. No file system access here.

use std::io::Read;

use super::tree::{
    EXTENTS_MAX, Entry, Extent, Kind, MAGIC, Meta, NAME_MAX, PATH_MAX, Totals, TreeError,
    XATTR_BYTES_MAX, XATTR_VALUE_MAX, XATTRS_MAX, check_entry, kind, split_parent, unzigzag,
};

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
        let mut xattr_bytes = 0usize;
        for _ in 0..count {
            let name = self.bytes(NAME_MAX, "an xattr name")?;
            let value = self.bytes(XATTR_VALUE_MAX, "an xattr value")?;
            xattr_bytes += name.len() + value.len();
            if xattr_bytes > XATTR_BYTES_MAX {
                return Err(self.malformed(format!(
                    "more than {XATTR_BYTES_MAX} bytes of extended attributes"
                )));
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
                    return Err(self.malformed(format!("{count} extents (at most {EXTENTS_MAX})")));
                }
                let mut extents = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    extents.push(Extent {
                        offset: self.varint()?,
                        length: self.varint()?,
                    });
                }
                Kind::File { size, extents }
            }
            kind::SYMLINK => Kind::Symlink {
                target: self.bytes(PATH_MAX, "a symlink target")?,
            },
            kind::HARDLINK => Kind::Hardlink {
                target: self.bytes(PATH_MAX, "a hardlink target")?,
            },
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
        check_entry(&entry).map_err(|reason| self.malformed(reason))?;
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
    use crate::volume::tree::{
        OWN_CHUNKS_FROM, check_path, cut_before, encode_end, encode_entry, encode_start, fnv1a,
        put_varint, zigzag,
    };

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
