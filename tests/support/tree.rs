//! File trees for the volume tests: one with every kind of entry and odd metadata, a
//! description of a tree to compare two of them, and `rewind volume` run as a process.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::data::{pseudo_random, text_like};

/// `rewind volume …` or `rewind repo …` against a `file://` repository with a hex key.
pub struct VolumeRepo {
    _dir: tempfile::TempDir,
    /// The repository's directory.
    pub path: PathBuf,
    /// The master key (REWIND_REPO_KEY).
    pub key: String,
}

impl VolumeRepo {
    /// A new repository made with `rewind repo init`.
    pub fn init() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = Self {
            path: dir.path().join("repo"),
            _dir: dir,
            key: "5a".repeat(32),
        };
        let out = repo
            .rewind(&["repo", "init"])
            .output()
            .expect("rewind repo init");
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        repo
    }

    /// The `rewind` binary with this repository in its environment.
    pub fn rewind(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rewind"));
        command
            .args(args)
            .env(
                "REWIND_REPOSITORY",
                format!("file://{}", self.path.display()),
            )
            .env("REWIND_REPO_KEY", &self.key)
            .env_remove("REWIND_REPOSITORY_KEY_FILE");
        command
    }

    /// `rewind ARGS…`, which must succeed: its standard output as JSON.
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.rewind(args).output().expect("run rewind");
        assert!(
            out.status.success(),
            "rewind {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("a JSON summary")
    }

    /// `rewind volume backup --source DIR`: its JSON summary.
    pub fn backup(&self, source: &Path) -> serde_json::Value {
        let source = source.to_str().expect("utf-8 temp path");
        self.json(&[
            "volume",
            "backup",
            "--source",
            source,
            "--snapshot-meta",
            "test=volume",
            // Test trees are plain writable directories, not read-only snapshot mounts.
            "--live",
        ])
    }

    /// `rewind volume restore --devices`: its JSON summary.
    pub fn restore(&self, snapshot: &str, stream: &str, target: &Path) -> serde_json::Value {
        self.restore_with(snapshot, stream, target, &["--devices"])
    }

    /// `rewind volume restore` with `extra` options: its JSON summary.
    pub fn restore_with(
        &self,
        snapshot: &str,
        stream: &str,
        target: &Path,
        extra: &[&str],
    ) -> serde_json::Value {
        let target = target.to_str().expect("utf-8 temp path");
        let mut args = vec![
            "volume",
            "restore",
            "--snapshot",
            snapshot,
            "--stream",
            stream,
            "--target",
            target,
        ];
        args.extend_from_slice(extra);
        self.json(&args)
    }

    /// Bytes of every pack in the repository.
    pub fn pack_bytes(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() {
                        walk(&path)
                    } else {
                        e.metadata().map_or(0, |m| m.len())
                    }
                })
                .sum()
        }
        walk(&self.path.join("packs"))
    }
}

fn c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("no NUL")
}

/// Sets a file's times (nanoseconds included) without following a symlink.
pub fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    let time = libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    // SAFETY: a NUL-terminated path and two timespecs.
    let done = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c(path).as_ptr(),
            [time, time].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(done, 0, "utimensat {}", path.display());
}

/// Sets `user.<name>`; false when the file system refuses extended attributes.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
    set_raw_xattr(path, &format!("user.{name}"), value)
}

/// Sets extended attribute `name` (any namespace); false when refused.
pub fn set_raw_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
    let name = CString::new(name).expect("name");
    // SAFETY: NUL-terminated strings, a value valid for its length.
    let done = unsafe {
        libc::lsetxattr(
            c(path).as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    done == 0
}

/// `user.*` attributes of a path (without following a symlink).
pub fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut all = all_xattrs(path);
    all.retain(|name, _| name.starts_with("user."));
    all
}

/// Every extended attribute of a path this process can read (without following a symlink).
pub fn all_xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 4096];
    // SAFETY: buffer valid for its length.
    let len = unsafe { libc::llistxattr(c(path).as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    let mut out = BTreeMap::new();
    if len <= 0 {
        return out;
    }
    for name in names[..len as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
    {
        let c_name = CString::new(name).expect("name");
        let mut value = vec![0u8; 65536];
        // SAFETY: buffer valid for its length.
        let got = unsafe {
            libc::lgetxattr(
                c(path).as_ptr(),
                c_name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if got >= 0 {
            value.truncate(got as usize);
            out.insert(String::from_utf8_lossy(name).to_string(), value);
        }
    }
    out
}

/// What the tree builder made, for the assertions that depend on the file system.
pub struct Built {
    /// The file system took `user.*` attributes.
    pub xattrs: bool,
    /// Bytes of file data (apparent sizes, holes excluded).
    pub data_bytes: u64,
    /// Regular files written (first links).
    pub files: u64,
    /// FIFOs and devices made (devices only as root).
    pub special: u64,
}

/// Makes a FIFO, or a device as root (`kind` S_IFIFO, S_IFCHR or S_IFBLK); false when refused.
pub fn mknod(path: &Path, kind: libc::mode_t, mode: libc::mode_t, major: u32, minor: u32) -> bool {
    // SAFETY: a NUL-terminated path.
    let done = unsafe { libc::mknod(c(path).as_ptr(), kind | mode, libc::makedev(major, minor)) };
    if done != 0 {
        return false;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("mode");
    true
}

/// A tree with nested directories, `small_files` small files, a larger file, a symlink, a
/// dangling symlink, a hardlink, a sparse file, an empty file and directory, odd modes and
/// names, nanosecond times and (where the file system allows) `user.*` attributes.
pub fn build_tree(root: &Path, small_files: usize) -> Built {
    std::fs::create_dir_all(root).expect("root");
    // (data bytes, files) written so far
    let mut counted = (0u64, 0u64);
    let write = |counted: &mut (u64, u64), path: &Path, data: &[u8]| {
        std::fs::write(path, data).expect("write");
        counted.0 += data.len() as u64;
        counted.1 += 1;
    };
    for i in 0..small_files {
        let dir = root.join(format!("d{}/e{}", i % 7, i % 3));
        std::fs::create_dir_all(&dir).expect("dirs");
        let data = if i % 2 == 0 {
            text_like(500 + (i * 37) % 3000, i as u64)
        } else {
            pseudo_random(200 + (i * 53) % 4000, i as u64)
        };
        write(&mut counted, &dir.join(format!("file-{i:05}")), &data);
    }
    write(
        &mut counted,
        &root.join("large.bin"),
        &pseudo_random(6 << 20, 99),
    );
    write(
        &mut counted,
        &root.join("large.log"),
        &text_like(4 << 20, 98),
    );
    write(&mut counted, &root.join("empty"), b"");
    std::fs::create_dir_all(root.join("empty-dir")).expect("empty dir");
    let odd = OsStr::from_bytes(b"odd \xff name\nwith newline");
    write(&mut counted, &root.join(odd), b"odd name");
    std::os::unix::fs::symlink("large.log", root.join("link-to-log")).expect("symlink");
    std::os::unix::fs::symlink(
        OsStr::from_bytes(b"../nowhere/\xc3"),
        root.join("d0/dangling"),
    )
    .expect("dangling");
    std::fs::hard_link(root.join("large.log"), root.join("d1/second-name-of-log"))
        .expect("hardlink");
    let sparse = std::fs::File::create(root.join("sparse.img")).expect("sparse");
    sparse.write_all_at(b"start", 0).expect("start");
    sparse
        .write_all_at(&pseudo_random(100_000, 5), 40 << 20)
        .expect("middle");
    sparse.set_len(64 << 20).expect("length");
    counted.0 += 5 + 100_000;
    counted.1 += 1;
    drop(sparse);
    let setuid = root.join("d2/setuid-tool");
    write(&mut counted, &setuid, b"#!/bin/sh\n");
    std::fs::set_permissions(&setuid, std::fs::Permissions::from_mode(0o4755)).expect("mode");
    let private = root.join("d3/private");
    write(&mut counted, &private, b"secret");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).expect("mode");
    std::fs::set_permissions(root.join("d4"), std::fs::Permissions::from_mode(0o1777))
        .expect("sticky");
    std::fs::set_permissions(root.join("d5"), std::fs::Permissions::from_mode(0o2750))
        .expect("setgid");
    let xattrs = set_xattr(&root.join("large.log"), "origin", b"bench\x00\xff")
        && set_xattr(&root.join("d1"), "dir-note", b"a directory attribute");
    set_mtime(&root.join("large.bin"), 1_234_567_890, 123_456_789);
    set_mtime(&root.join("link-to-log"), 1_000_000_000, 5);
    set_mtime(&root.join("d0/e0"), 1_500_000_000, 999_999_999);
    set_mtime(&root.join("empty-dir"), -1_000, 0);
    // A FIFO always; devices where this runs as root (a major above 255 and a 20-bit minor included).
    std::fs::create_dir_all(root.join("d6")).expect("d6");
    assert!(
        mknod(&root.join("d6/pipe"), libc::S_IFIFO, 0o640, 0, 0),
        "mkfifo"
    );
    let mut special = 1;
    if mknod(&root.join("d6/char-dev"), libc::S_IFCHR, 0o620, 1, 3) {
        assert!(
            mknod(
                &root.join("d6/block-dev"),
                libc::S_IFBLK,
                0o660,
                259,
                0x9_8765
            ),
            "a second device"
        );
        special += 2;
    }
    set_mtime(&root.join("d6/pipe"), 1_600_000_000, 42);
    Built {
        xattrs,
        data_bytes: counted.0,
        files: counted.1,
        special,
    }
}

/// One entry as compared between two trees.
#[derive(Debug, PartialEq, Eq)]
pub struct Described {
    pub kind: &'static str,
    pub mode: u32,
    pub owner: (u32, u32),
    pub mtime: (i64, i64),
    pub size: u64,
    pub content: Option<[u8; 32]>,
    pub target: Option<Vec<u8>>,
    /// (major, minor) of a device.
    pub device: Option<(u32, u32)>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Names of the same inode, relative, sorted (for files with several links).
    pub links: Vec<Vec<u8>>,
}

/// Every entry under `root` (root itself as the empty path), by relative path bytes.
pub fn describe(root: &Path) -> BTreeMap<Vec<u8>, Described> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    fn walk(
        root: &Path,
        rel: &[u8],
        out: &mut BTreeMap<Vec<u8>, Described>,
        inodes: &mut BTreeMap<u64, Vec<Vec<u8>>>,
    ) {
        let path = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(rel))
        };
        let stat = std::fs::symlink_metadata(&path).expect("lstat");
        use std::os::unix::fs::FileTypeExt;
        let file_type = stat.file_type();
        let kind = if file_type.is_dir() {
            "dir"
        } else if file_type.is_symlink() {
            "symlink"
        } else if file_type.is_fifo() {
            "fifo"
        } else if file_type.is_char_device() {
            "char"
        } else if file_type.is_block_device() {
            "block"
        } else {
            "file"
        };
        let content = (kind == "file").then(|| {
            let data = std::fs::read(&path).expect("read");
            let digest: [u8; 32] = blake3::hash(&data).into();
            digest
        });
        if kind == "file" && stat.nlink() > 1 {
            inodes.entry(stat.ino()).or_default().push(rel.to_vec());
        }
        out.insert(
            rel.to_vec(),
            Described {
                kind,
                mode: stat.mode() & 0o7777,
                owner: (stat.uid(), stat.gid()),
                mtime: (stat.mtime(), stat.mtime_nsec()),
                size: if kind == "file" || kind == "symlink" {
                    stat.size()
                } else {
                    0
                },
                device: (kind == "char" || kind == "block")
                    .then(|| (libc::major(stat.rdev()), libc::minor(stat.rdev()))),
                content,
                target: (kind == "symlink").then(|| {
                    std::fs::read_link(&path)
                        .expect("readlink")
                        .as_os_str()
                        .as_bytes()
                        .to_vec()
                }),
                xattrs: xattrs(&path),
                links: Vec::new(),
            },
        );
        if kind == "dir" {
            for entry in std::fs::read_dir(&path).expect("read_dir").flatten() {
                let mut child = rel.to_vec();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(entry.file_name().as_bytes());
                walk(root, &child, out, inodes);
            }
        }
    }
    walk(root, b"", &mut out, &mut inodes);
    for names in inodes.into_values() {
        let mut sorted = names.clone();
        sorted.sort();
        for name in names {
            if let Some(entry) = out.get_mut(&name) {
                entry.links = sorted.clone();
            }
        }
    }
    out
}

/// Asserts two trees are the same, entry by entry, and says which entry differs.
pub fn assert_same_tree(source: &Path, restored: &Path) {
    let want = describe(source);
    let got = describe(restored);
    let want_names: Vec<_> = want
        .keys()
        .map(|k| String::from_utf8_lossy(k).to_string())
        .collect();
    let got_names: Vec<_> = got
        .keys()
        .map(|k| String::from_utf8_lossy(k).to_string())
        .collect();
    assert_eq!(got_names, want_names, "the same entries");
    for (name, want) in &want {
        assert_eq!(
            &got[name],
            want,
            "entry {:?}",
            String::from_utf8_lossy(name)
        );
    }
}

/// Overwrites 4 KiB (or the whole file, when smaller) of every 100th regular file under
/// `root`; returns how many files and bytes changed.
pub fn change_one_percent(root: &Path) -> (u64, u64) {
    let mut paths = Vec::new();
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read_dir")
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries {
            let stat = std::fs::symlink_metadata(&path).expect("lstat");
            if stat.is_dir() {
                walk(&path, out);
            } else if stat.is_file() && stat.nlink() == 1 && stat.blocks() * 512 >= stat.size() {
                out.push(path);
            }
        }
    }
    walk(root, &mut paths);
    let (mut files, mut bytes) = (0u64, 0u64);
    for (i, path) in paths.iter().enumerate().filter(|(i, _)| i % 100 == 42) {
        let size = std::fs::metadata(path).expect("stat").len();
        let len = size.min(4096);
        let at = (size - len) / 2;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open");
        file.write_all_at(&pseudo_random(len as usize, 1_000 + i as u64), at)
            .expect("change");
        files += 1;
        bytes += len;
    }
    (files, bytes)
}
