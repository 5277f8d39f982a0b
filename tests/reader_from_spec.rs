//! docs/repository-format.md is enough to read a repository: a Python reader written from
//! that document alone (tests/reader_from_spec/read_stream.py) reads back, byte for byte,
//! what the real `rewind repo put` stored, and refuses damage and the wrong key.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use support::data::{pseudo_random, text_like};

const HEX_KEY: &str = "3c9a5e01f4b2d87766e1a0c3b5d4f2e19a8b7c6d5e4f30211a2b3c4d5e6f7081";
const PASSPHRASE: &str = "correct horse battery staple, but longer";

fn spec_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reader_from_spec")
}

/// The venv's python, created once at `${REWIND_CACHE:-$HOME/.cache/rewind}/spec-reader-venv` and reused
/// while it holds exactly the packages of requirements.txt.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let requirements = std::fs::read_to_string(spec_dir().join("requirements.txt"))
            .expect("tests/reader_from_spec/requirements.txt");
        let cache = std::env::var_os("REWIND_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/rewind")))
            .unwrap_or_else(|| std::env::temp_dir().join("rewind-cache"));
        let venv = cache.join("spec-reader-venv");
        let python = venv.join("bin/python");
        let stamp = venv.join("rewind-requirements.txt");
        let ready = |python: &Path, stamp: &Path| {
            std::fs::read_to_string(stamp).is_ok_and(|s| s == requirements)
                && Command::new(python)
                    .args(["-c", "import nacl.bindings, blake3, zstandard"])
                    .status()
                    .is_ok_and(|s| s.success())
        };
        if ready(&python, &stamp) {
            return python;
        }
        match Command::new("python3").arg("--version").output() {
            Ok(out) if out.status.success() => {}
            _ => panic!(
                "python3 is needed to run the reader written from docs/repository-format.md: \
                 install Python 3 with its venv module (Debian: apt-get install python3 python3-venv)"
            ),
        }
        // Build beside the final place and rename, so a half-built venv is never reused.
        std::fs::create_dir_all(&cache).expect("create ~/.cache/rewind");
        let building = cache.join(format!("spec-reader-venv.building-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&building);
        let created = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&building)
            .output()
            .expect("run python3 -m venv");
        assert!(
            created.status.success(),
            "python3 -m venv failed (Debian: apt-get install python3-venv): {}",
            String::from_utf8_lossy(&created.stderr)
        );
        let installed = Command::new(building.join("bin/python"))
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(spec_dir().join("requirements.txt"))
            .output()
            .expect("run pip");
        assert!(
            installed.status.success(),
            "pip install -r tests/reader_from_spec/requirements.txt failed: {}{}",
            String::from_utf8_lossy(&installed.stdout),
            String::from_utf8_lossy(&installed.stderr)
        );
        std::fs::write(building.join("rewind-requirements.txt"), &requirements).expect("stamp");
        let _ = std::fs::remove_dir_all(&venv);
        if std::fs::rename(&building, &venv).is_err() {
            // Another test run finished first: use its venv if it is complete.
            let _ = std::fs::remove_dir_all(&building);
        }
        assert!(
            ready(&python, &stamp),
            "the venv at {} is not usable",
            venv.display()
        );
        python
    })
}

/// A `file://` repository made with the real `rewind` binary.
struct Repo {
    _dir: tempfile::TempDir,
    path: PathBuf,
    key: String,
}

impl Repo {
    fn init(key: &str) -> Repo {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = Repo {
            path: dir.path().join("repo"),
            _dir: dir,
            key: key.to_string(),
        };
        let out = repo.rewind(&["init"]).output().expect("rewind repo init");
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        repo
    }

    fn rewind(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rewind"));
        command
            .arg("repo")
            .args(["--repo", &format!("file://{}", self.path.display())])
            .args(args)
            .env("REWIND_REPO_KEY", &self.key)
            .env_remove("REWIND_REPOSITORY_KEY_FILE")
            .env_remove("REWIND_REPOSITORY");
        command
    }

    /// `rewind repo put --name NAME` with `data` on stdin; the new snapshot's id.
    fn put(&self, name: &str, data: &[u8]) -> String {
        let mut child = self
            .rewind(&["put", "--name", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rewind repo put");
        let mut stdin = child.stdin.take().expect("stdin");
        let data = data.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&data));
        let out = child.wait_with_output().expect("put output");
        feeder.join().expect("feeder").expect("feed put");
        assert!(
            out.status.success(),
            "put: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8(out.stdout)
            .expect("utf-8 id")
            .trim()
            .to_string();
        assert!(!id.is_empty(), "put printed no snapshot id");
        id
    }

    /// The Python reader, with `key` as REWIND_REPO_KEY.
    fn spec_reader(&self, key: &str, args: &[&str]) -> Output {
        Command::new(python())
            .arg(spec_dir().join("read_stream.py"))
            .arg(&self.path)
            .args(args)
            .env("REWIND_REPO_KEY", key)
            .output()
            .expect("run read_stream.py")
    }

    /// The stream's bytes as the Python reader prints them; panics on refusal.
    fn cat(&self, snapshot: &str, stream: &str) -> Vec<u8> {
        let out = self.spec_reader(&self.key, &["cat", snapshot, stream]);
        assert!(
            out.status.success(),
            "read_stream.py cat {snapshot} {stream} refused: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `ls` as the Python reader prints it: (snapshot id, stream names) per line.
    fn ls(&self, key: &str) -> Vec<(String, Vec<String>)> {
        let out = self.spec_reader(key, &["ls"]);
        assert!(
            out.status.success(),
            "read_stream.py ls refused: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8 ls")
            .lines()
            .map(|line| {
                let mut fields = line.split('\t').map(str::to_string);
                let id = fields.next().expect("id");
                (id, fields.collect())
            })
            .collect()
    }

    fn files_under(&self, sub: &str) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.path.join(sub), &mut out);
        out.sort();
        out
    }

    fn stored_pack_bytes(&self) -> u64 {
        self.files_under("packs")
            .iter()
            .map(|p| p.metadata().expect("pack metadata").len())
            .sum()
    }
}

fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got == want,
        "{what}: the spec reader returned {} bytes that differ from the {} bytes stored",
        got.len(),
        want.len()
    );
}

#[test]
fn a_reader_written_from_the_format_document_reads_every_stream_back() {
    let repo = Repo::init(HEX_KEY);
    let streams: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("tiny", b"hello, repository\n".to_vec()),
        (
            "projects/shop/databases/random.dump",
            pseudo_random(5_000_000, 7),
        ),
        ("projects/shop/manifests.jsonl", text_like(5_000_000, 11)),
    ];
    let ids: Vec<String> = streams
        .iter()
        .map(|(name, data)| repo.put(name, data))
        .collect();
    for ((name, data), id) in streams.iter().zip(&ids) {
        assert_same(&repo.cat(id, name), data, name);
    }
    let listed = repo.ls(HEX_KEY);
    let mut expected: Vec<(String, Vec<String>)> = ids
        .iter()
        .zip(&streams)
        .map(|(id, (name, _))| (id.clone(), vec![name.to_string()]))
        .collect();
    expected.sort();
    assert_eq!(listed, expected, "ls lists every snapshot with its stream");
    // The compressible stream really was stored compressed (flag 1 blobs were read).
    let text_stored = repo.stored_pack_bytes();
    assert!(
        text_stored < 5_000_000 + 5_000_000 / 2,
        "5 MB of text should compress: packs hold {text_stored} bytes"
    );
}

#[test]
fn a_second_snapshot_that_shares_most_data_reads_back_through_the_shared_chunks() {
    let repo = Repo::init(HEX_KEY);
    let first = text_like(5_000_000, 3);
    let mut second = first.clone();
    second.splice(
        2_500_000..2_500_000,
        b"an edit in the middle of the dump\n".iter().copied(),
    );
    second.extend_from_slice(&pseudo_random(100_000, 5));
    let a = repo.put("dump", &first);
    let after_first = repo.stored_pack_bytes();
    let b = repo.put("dump", &second);
    let added = repo.stored_pack_bytes() - after_first;
    assert!(
        added < after_first / 2,
        "the second snapshot should reuse most chunks: it added {added} of {after_first} bytes"
    );
    assert_same(&repo.cat(&a, "dump"), &first, "first snapshot");
    assert_same(&repo.cat(&b, "dump"), &second, "second snapshot");
}

#[test]
fn a_passphrase_master_key_is_derived_as_the_document_says() {
    // rewind trims the key text; the reader gets it without the surrounding whitespace.
    let repo = Repo::init(&format!("  {PASSPHRASE}\n"));
    let data = text_like(300_000, 13);
    let id = repo.put("dump", &data);
    let out = repo.spec_reader(PASSPHRASE, &["cat", &id, "dump"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(&out.stdout, &data, "passphrase repository");
    // A passphrase counts bytes, not characters: 8 two-byte characters are enough.
    let accented = Repo::init("éééééééé");
    let id = accented.put("tiny", b"x");
    assert_same(&accented.cat(&id, "tiny"), b"x", "non-ASCII passphrase");
}

#[test]
fn a_hex_master_key_is_the_key_itself_in_either_case() {
    let repo = Repo::init(HEX_KEY);
    let id = repo.put("tiny", b"abc");
    let upper = repo.ls(&HEX_KEY.to_uppercase());
    assert_eq!(upper, vec![(id.clone(), vec!["tiny".to_string()])]);
    // One more hex digit makes it a passphrase, hence another key.
    let out = repo.spec_reader(&format!("{HEX_KEY}0"), &["ls"]);
    assert!(
        !out.status.success(),
        "65 hex characters are a passphrase, not this key"
    );
}

#[test]
fn the_reader_refuses_a_pack_with_one_flipped_bit() {
    let repo = Repo::init(HEX_KEY);
    let data = pseudo_random(3_000_000, 17);
    let id = repo.put("dump", &data);
    assert_same(&repo.cat(&id, "dump"), &data, "before the damage");
    let packs = repo.files_under("packs");
    assert!(!packs.is_empty(), "put stored no pack");
    for pack in &packs {
        let mut bytes = std::fs::read(pack).expect("read pack");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x10;
        std::fs::write(pack, &bytes).expect("write pack");
        let out = repo.spec_reader(HEX_KEY, &["cat", &id, "dump"]);
        assert!(
            !out.status.success(),
            "a flipped bit in {} must be refused",
            pack.display()
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("authentication failed"), "{stderr}");
        assert!(
            out.stdout.len() < data.len(),
            "the damaged chunk was never printed"
        );
        bytes[middle] ^= 0x10;
        std::fs::write(pack, &bytes).expect("restore pack");
    }
    assert_same(&repo.cat(&id, "dump"), &data, "after the repair");
}

#[test]
fn the_reader_refuses_the_wrong_key() {
    let repo = Repo::init(HEX_KEY);
    let id = repo.put("tiny", b"secret");
    for wrong in [&"00".repeat(32), "a passphrase that is not the key"] {
        let out = repo.spec_reader(wrong, &["cat", &id, "tiny"]);
        assert!(!out.status.success(), "key {wrong:?} must be refused");
        assert!(
            out.stdout.is_empty(),
            "nothing is printed with the wrong key"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("master key does not open"), "{stderr}");
    }
}

#[test]
fn the_reader_refuses_a_format_version_other_than_1() {
    let repo = Repo::init(HEX_KEY);
    repo.put("tiny", b"abc");
    let config_path = repo.path.join("config");
    let config = std::fs::read_to_string(&config_path).expect("config");
    let mut json: serde_json::Value = serde_json::from_str(&config).expect("config is JSON");
    json["version"] = serde_json::json!(2);
    std::fs::write(&config_path, json.to_string()).expect("write config");
    let out = repo.spec_reader(HEX_KEY, &["ls"]);
    assert!(!out.status.success(), "version 2 must be refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("version 2 is not supported"), "{stderr}");
}

/// `rewind volume backup` of `source` into `repo`: (snapshot id, stream name).
fn volume_backup(repo: &Repo, source: &Path) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args([
            "volume",
            "--repo",
            &format!("file://{}", repo.path.display()),
        ])
        .args([
            "backup",
            "--live",
            "--source",
            source.to_str().expect("utf-8 temp path"),
        ])
        .env("REWIND_REPO_KEY", &repo.key)
        .env_remove("REWIND_REPOSITORY_KEY_FILE")
        .env_remove("REWIND_REPOSITORY")
        .output()
        .expect("rewind volume backup");
    assert!(
        out.status.success(),
        "volume backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    (
        summary["snapshot"].as_str().expect("snapshot").to_string(),
        summary["stream"].as_str().expect("stream").to_string(),
    )
}

/// The spec reader's `tree-ls`: one JSON object per entry.
fn tree_ls(repo: &Repo, snapshot: &str, stream: &str) -> Vec<serde_json::Value> {
    let out = repo.spec_reader(HEX_KEY, &["tree-ls", snapshot, stream]);
    assert!(
        out.status.success(),
        "tree-ls refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// The spec reader's `tree-extract` into `target`, which must succeed.
fn tree_extract(repo: &Repo, snapshot: &str, stream: &str, target: &Path) {
    let out = repo.spec_reader(
        HEX_KEY,
        &[
            "tree-extract",
            snapshot,
            stream,
            target.to_str().expect("utf-8"),
        ],
    );
    assert!(
        out.status.success(),
        "tree-extract refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `rewind volume restore ARGS… --target TARGET` against `repo`.
fn rewind_restore(repo: &Repo, args: &[&str], target: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args([
            "volume",
            "--repo",
            &format!("file://{}", repo.path.display()),
            "restore",
        ])
        .args(args)
        .arg("--target")
        .arg(target)
        .env("REWIND_REPO_KEY", &repo.key)
        .env_remove("REWIND_REPOSITORY_KEY_FILE")
        .env_remove("REWIND_REPOSITORY")
        .output()
        .expect("rewind volume restore")
}

#[test]
fn a_reader_written_from_the_format_document_lists_and_extracts_a_tree_stream() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("source");
    support::tree::build_tree(&source, 300);
    let repo = Repo::init(HEX_KEY);
    let (snapshot, stream) = volume_backup(&repo, &source);

    let listed = tree_ls(&repo, &snapshot, &stream);
    let described = support::tree::describe(&source);
    assert_eq!(
        listed.len(),
        described.len(),
        "one line per entry of the tree"
    );
    let hex_path = |entry: &serde_json::Value| {
        hex::decode(entry["path"].as_str().expect("path")).expect("hex path")
    };
    let paths: Vec<Vec<u8>> = listed.iter().map(hex_path).collect();
    assert!(paths[0].is_empty(), "the root comes first");
    for entry in &listed {
        let path = hex_path(entry);
        let want = &described[&path];
        let name = String::from_utf8_lossy(&path).to_string();
        assert_eq!(entry["mode"], want.mode, "{name}");
        assert_eq!(entry["mtime"][0], want.mtime.0, "{name}");
        assert_eq!(entry["mtime"][1], want.mtime.1, "{name}");
        let kind = entry["kind"].as_str().expect("kind");
        match want.kind {
            "dir" => assert_eq!(kind, "D", "{name}"),
            "symlink" => {
                assert_eq!(kind, "L", "{name}");
                let target = hex::decode(entry["target"].as_str().expect("target")).expect("hex");
                assert_eq!(Some(target), want.target, "{name}");
            }
            _ if kind == "H" => {
                let target = hex::decode(entry["target"].as_str().expect("target")).expect("hex");
                assert!(want.links.contains(&target) && target != path, "{name}");
            }
            "fifo" => assert_eq!(kind, "P", "{name}"),
            "char" | "block" => {
                assert_eq!(kind, if want.kind == "char" { "C" } else { "B" }, "{name}");
                let (major, minor) = want.device.expect("a device");
                assert_eq!(entry["major"], major, "{name}");
                assert_eq!(entry["minor"], minor, "{name}");
            }
            _ => {
                assert_eq!(kind, "F", "{name}");
                assert_eq!(entry["size"], want.size, "{name}");
            }
        }
    }
    let sparse = listed
        .iter()
        .find(|e| hex_path(e) == b"sparse.img")
        .expect("the sparse file is listed");
    let stored: u64 = sparse["extents"]
        .as_array()
        .expect("extents")
        .iter()
        .map(|e| e[1].as_u64().expect("length"))
        .sum();
    assert!(stored < 1 << 20, "holes are not data: {sparse}");

    let extracted = dir.path().join("extracted-by-the-spec-reader");
    tree_extract(&repo, &snapshot, &stream, &extracted);
    support::tree::assert_same_tree(&source, &extracted);
}

/// A tree stream by hand: the root, then `entries` (kind, path, body), then a right end record.
fn hand_made_tree(entries: &[(u8, &[u8], Vec<u8>)]) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push(value as u8 | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }
    let mut out = b"RWTREE1\n".to_vec();
    let root: (u8, &[u8], Vec<u8>) = (b'D', b"", Vec::new());
    for (kind, path, body) in std::iter::once(&root).chain(entries) {
        out.push(*kind);
        varint(&mut out, path.len() as u64);
        out.extend_from_slice(path);
        for field in [0o755, 0, 0, 0, 0, 0] {
            varint(&mut out, field); // mode, uid, gid, mtime s, ns, no xattrs
        }
        out.extend_from_slice(body);
    }
    out.push(b'E');
    varint(&mut out, entries.len() as u64 + 1);
    varint(&mut out, 0);
    out
}

#[test]
fn both_readers_refuse_a_tree_stream_that_would_write_through_a_symlink_or_climb_out() {
    let repo = Repo::init(HEX_KEY);
    // A file outside every target, on the same file system: a hardlink to it would succeed.
    let outside = tempfile::tempdir().expect("outside");
    std::fs::write(outside.path().join("secret"), b"not the tenant's").expect("secret");
    let symlink_outside = {
        let target = outside.path().as_os_str().as_encoded_bytes();
        let mut body = vec![target.len() as u8];
        body.extend_from_slice(target);
        body
    };
    let link_through = {
        let mut body = vec![8u8];
        body.extend_from_slice(b"s/secret");
        body
    };
    let symlink_to_tmp = {
        let mut body = vec![4u8];
        body.extend_from_slice(b"/tmp");
        body
    };
    let empty_file = vec![0u8, 0u8]; // size 0, no extents
    // (name, stream, what the spec reader says, what rewind says)
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "through-symlink",
            hand_made_tree(&[
                (b'L', b"s", symlink_to_tmp),
                (b'F', b"s/planted", empty_file.clone()),
            ]),
            "parent",
            "malformed",
        ),
        (
            "hardlink-through-symlink",
            hand_made_tree(&[(b'L', b"s", symlink_outside), (b'H', b"t", link_through)]),
            "hardlink target",
            "a hardlink's target",
        ),
        (
            "climbs-out",
            hand_made_tree(&[(b'F', b"../planted", empty_file.clone())]),
            "path",
            "malformed",
        ),
        (
            "twice",
            hand_made_tree(&[(b'F', b"x", empty_file.clone()), (b'F', b"x", empty_file)]),
            "order",
            "malformed",
        ),
    ];
    for (name, stream, reason, rewind_reason) in cases {
        let id = repo.put(name, &stream);
        let target = tempfile::tempdir().expect("target");
        let out = repo.spec_reader(
            HEX_KEY,
            &[
                "tree-extract",
                &id,
                name,
                target.path().to_str().expect("utf-8"),
            ],
        );
        assert!(!out.status.success(), "the spec reader extracted {name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "{name}: {stderr}");
        assert!(
            !target.path().join("t").exists(),
            "{name}: the spec reader linked outside"
        );
        // Its own target: the spec reader may have made entries before it refused.
        let rewind_target = tempfile::tempdir().expect("target");
        let out = rewind_restore(
            &repo,
            &["--snapshot", &id, "--stream", name],
            rewind_target.path(),
        );
        assert!(!out.status.success(), "rewind restored {name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(rewind_reason), "{name}: {stderr}");
        assert!(
            !rewind_target.path().join("t").exists(),
            "{name}: rewind linked outside"
        );
        assert!(!Path::new("/tmp/planted").exists() && !target.path().join("../planted").exists());
        use std::os::unix::fs::MetadataExt;
        let secret = std::fs::metadata(outside.path().join("secret")).expect("secret");
        assert_eq!(
            secret.nlink(),
            1,
            "{name}: a second name of the outside file exists"
        );
    }
}

#[test]
fn the_spec_reader_and_rewind_agree_on_a_device_entry_and_a_sparse_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("source");
    std::fs::create_dir_all(&source).expect("source");
    // A major above 255 and a minor above 255 (Linux splits both across the dev_t).
    let devices = support::tree::mknod(&source.join("disk"), libc::S_IFBLK, 0o640, 259, 0x9_8765);
    if !devices {
        eprintln!("NOTE: not root: the device entry was not checked");
    }
    let sparse = std::fs::File::create(source.join("sparse")).expect("sparse");
    use std::os::unix::fs::FileExt;
    for at in [0u64, 3 << 20, 17 << 20] {
        sparse
            .write_all_at(b"data between holes", at)
            .expect("write");
    }
    sparse.set_len(40 << 20).expect("length");
    drop(sparse);
    let repo = Repo::init(HEX_KEY);
    let (snapshot, stream) = volume_backup(&repo, &source);

    let listed = tree_ls(&repo, &snapshot, &stream);
    let find = |name: &[u8]| {
        listed
            .iter()
            .find(|e| e["path"] == hex::encode(name))
            .unwrap_or_else(|| panic!("{listed:?}"))
            .clone()
    };
    let described = support::tree::describe(&source);
    if devices {
        let disk = find(b"disk");
        assert_eq!(disk["kind"], "B");
        assert_eq!(
            (disk["major"].clone(), disk["minor"].clone()),
            (259.into(), 0x9_8765.into())
        );
    }
    let runs = find(b"sparse")["extents"]
        .as_array()
        .expect("extents")
        .len();
    assert!(
        (3..=6).contains(&runs),
        "three data runs between holes: {runs}"
    );

    let by_spec = dir.path().join("by-the-spec-reader");
    tree_extract(&repo, &snapshot, &stream, &by_spec);
    let by_rewind = dir.path().join("by-rewind");
    let out = rewind_restore(
        &repo,
        &["--devices", "--snapshot", &snapshot, "--stream", &stream],
        &by_rewind,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for restored in [&by_spec, &by_rewind] {
        support::tree::assert_same_tree(&source, restored);
        assert_eq!(support::tree::describe(restored), described);
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(restored.join("sparse"))
            .expect("sparse")
            .blocks();
        assert!(
            blocks * 512 < 1 << 20,
            "{}: holes are holes",
            restored.display()
        );
    }
}
