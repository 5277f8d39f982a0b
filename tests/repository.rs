//! The repository's contract: round trips, dedup, typed errors for every kind of damage,
//! prune beside writers, two writers at once, and the CLI.

mod support;

use std::collections::BTreeMap;

use proptest::prelude::*;
use rewind::repository::{MasterKey, RepoError, Repository};
use support::data::{pseudo_random, text_like};
use tokio::io::AsyncReadExt;

fn key() -> MasterKey {
    MasterKey::from_text(&"5e".repeat(32)).expect("hex key")
}

async fn new_repo() -> (tempfile::TempDir, Repository) {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = Repository::init(&format!("file://{}/repo", dir.path().display()), &key())
        .await
        .expect("init");
    (dir, repo)
}

async fn put(repo: &Repository, streams: &[(&str, &[u8])]) -> String {
    let mut writer = repo
        .start_snapshot(BTreeMap::from([(
            "account".to_string(),
            "acme".to_string(),
        )]))
        .await
        .expect("start");
    for (name, data) in streams {
        writer.start_stream(name).await.expect("stream");
        for piece in data.chunks(1_000_003) {
            writer.write(piece).await.expect("write");
        }
        writer.finish_stream().await.expect("finish");
    }
    writer.commit().await.expect("commit").id
}

async fn read(repo: &Repository, snapshot: &str, stream: &str) -> Result<Vec<u8>, std::io::Error> {
    let mut reader = repo
        .read_stream(snapshot, stream)
        .await
        .map_err(std::io::Error::other)?;
    let mut out = Vec::new();
    reader.read_to_end(&mut out).await?;
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn any_stream_reads_back_byte_for_byte(len in prop_oneof![Just(0usize), 1usize..100, 100usize..300_000, 3_000_000usize..9_000_000], seed in any::<u64>(), compressible in any::<bool>()) {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let (_dir, repo) = new_repo().await;
            let data = if compressible { text_like(len, seed) } else { pseudo_random(len, seed) };
            let id = put(&repo, &[("s", &data)]).await;
            prop_assert_eq!(read(&repo, &id, "s").await.expect("read"), data);
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn a_second_snapshot_of_the_same_data_stores_almost_nothing() {
    let (_dir, repo) = new_repo().await;
    let data = text_like(6_000_000, 7);
    put(&repo, &[("dump", &data)]).await;
    let first = repo.stats().await.expect("stats").stored_bytes;
    let mut changed = data.clone();
    for i in (0..changed.len()).step_by(600_000) {
        changed[i] = b'#';
    }
    let second_id = put(&repo, &[("dump", &changed)]).await;
    let stats = repo.stats().await.expect("stats");
    let added = stats
        .snapshots
        .iter()
        .find(|s| s.id == second_id)
        .map(|s| s.added_bytes)
        .unwrap_or(u64::MAX);
    assert!(
        first < data.len() as u64 / 2,
        "text compresses: {first} stored for {} bytes",
        data.len()
    );
    assert!(
        added < first,
        "10 small edits add {added} bytes, less than the first snapshot's {first}"
    );
    assert_eq!(
        read(&repo, &second_id, "dump").await.expect("read"),
        changed
    );
}

#[tokio::test]
async fn the_wrong_master_key_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}/repo", dir.path().display());
    Repository::init(&url, &key()).await.expect("init");
    let wrong = MasterKey::from_text("not the key that made this repository").expect("passphrase");
    assert!(matches!(
        Repository::open(&url, &wrong).await,
        Err(RepoError::WrongKey)
    ));
    assert!(matches!(
        Repository::init(&url, &key()).await,
        Err(RepoError::AlreadyExists(_))
    ));
}

#[tokio::test]
async fn an_unknown_format_version_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}/repo", dir.path().display());
    Repository::init(&url, &key()).await.expect("init");
    let config_path = dir.path().join("repo/config");
    let config = std::fs::read_to_string(&config_path)
        .expect("config")
        .replace("\"version\": 1", "\"version\": 7");
    std::fs::write(&config_path, config).expect("rewrite config");
    match Repository::open(&url, &key()).await {
        Err(err @ RepoError::UnsupportedVersion { found: 7, .. }) => {
            assert!(err.to_string().contains("upgrade rewind"))
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

fn packs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in walk(&dir.join("repo/packs")) {
        found.push(entry);
    }
    found
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path))
            } else {
                out.push(path)
            }
        }
    }
    out
}

#[tokio::test]
async fn check_names_the_snapshot_and_stream_a_missing_pack_damages() {
    let (dir, repo) = new_repo().await;
    let kept = put(&repo, &[("small", b"tiny stream in its own pack")]).await;
    let before: Vec<_> = packs(dir.path());
    let damaged = put(&repo, &[("big", &pseudo_random(2_000_000, 3))]).await;
    let new_pack = packs(dir.path())
        .into_iter()
        .find(|p| !before.contains(p))
        .expect("a new pack");
    std::fs::remove_file(new_pack).expect("delete pack");
    let report = repo.check().await.expect("check runs");
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert_eq!(report.problems[0].snapshot, damaged);
    assert_eq!(report.problems[0].stream, "big");
    assert!(
        report.problems[0].problem.contains("missing"),
        "{}",
        report.problems[0].problem
    );
    assert!(
        read(&repo, &kept, "small").await.is_ok(),
        "other snapshots stay readable"
    );
}

#[tokio::test]
async fn truncated_or_bit_flipped_packs_are_errors_never_wrong_data() {
    for damage in ["truncate", "flip"] {
        let (dir, repo) = new_repo().await;
        let data = pseudo_random(500_000, 11);
        let id = put(&repo, &[("s", &data)]).await;
        let pack = packs(dir.path()).pop().expect("a pack");
        let mut bytes = std::fs::read(&pack).expect("pack");
        match damage {
            "truncate" => bytes.truncate(bytes.len() / 2),
            _ => {
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x01;
            }
        }
        std::fs::write(&pack, bytes).expect("damage");
        let result = read(&repo, &id, "s").await;
        assert!(
            result.is_err(),
            "{damage}: damaged data must not read back as a success"
        );
        let report = repo.check().await.expect("check runs");
        assert_eq!(report.problems.len(), 1, "{damage}: {report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_refuses_to_run_beside_a_writer_and_then_frees_only_unreferenced_data() {
    let (_dir, repo) = new_repo().await;
    let keep = put(&repo, &[("keep", &pseudo_random(300_000, 1))]).await;
    let drop = put(&repo, &[("drop", &pseudo_random(300_000, 2))]).await;
    let mut writer = repo.start_snapshot(BTreeMap::new()).await.expect("writer");
    writer.start_stream("in-flight").await.expect("stream");
    writer
        .write(&pseudo_random(100_000, 3))
        .await
        .expect("write");
    assert!(
        matches!(repo.prune().await, Err(RepoError::Busy(_))),
        "prune must not run beside a writer"
    );
    let in_flight = writer.commit().await.expect("commit").id;
    repo.delete_snapshot(&drop).await.expect("forget");
    let report = repo.prune().await.expect("prune");
    assert!(report.packs_deleted >= 1, "{report:?}");
    assert!(read(&repo, &keep, "keep").await.is_ok());
    assert!(read(&repo, &in_flight, "in-flight").await.is_ok());
    assert!(repo.check().await.expect("check").problems.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_at_once_do_not_corrupt_each_other() {
    let (_dir, repo) = new_repo().await;
    let shared = text_like(3_000_000, 5);
    let streams_a = [("a", shared.as_slice())];
    let streams_b = [("b", shared.as_slice())];
    let (a, b) = tokio::join!(put(&repo, &streams_a), put(&repo, &streams_b));
    assert_eq!(read(&repo, &a, "a").await.expect("a"), shared);
    assert_eq!(read(&repo, &b, "b").await.expect("b"), shared);
    assert!(repo.check().await.expect("check").problems.is_empty());
}

#[test]
fn cli_puts_lists_cats_and_checks() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}/repo", dir.path().display());
    let rewind = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rewind"));
        command
            .arg("repo")
            .args(["--repo", &url])
            .args(args)
            .env("REWIND_REPO_KEY", "9f".repeat(32));
        command
    };
    assert!(rewind(&["init"]).status().expect("init").success());
    let data = text_like(1_500_000, 9);
    let mut put = rewind(&["put", "--name", "dump", "--meta", "account=acme"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("put");
    put.stdin
        .take()
        .expect("stdin")
        .write_all(&data)
        .expect("feed");
    let output = put.wait_with_output().expect("put output");
    assert!(output.status.success());
    let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let listed = rewind(&["ls"]).output().expect("ls");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("account=acme"));
    let cat = rewind(&["cat", &id, "dump"]).output().expect("cat");
    assert!(cat.status.success());
    assert!(cat.stdout == data, "cat returns what put stored");
    assert!(rewind(&["check"]).status().expect("check").success());
    let wrong = rewind(&["ls"])
        .env("REWIND_REPO_KEY", "00".repeat(32))
        .output()
        .expect("ls with the wrong key");
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("master key does not open"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}

#[tokio::test]
async fn a_second_stream_with_a_name_already_written_is_refused_and_the_first_is_kept() {
    let (_dir, repo) = new_repo().await;
    let mut writer = repo.start_snapshot(BTreeMap::new()).await.expect("start");
    writer.start_stream("dump").await.expect("stream");
    writer.write(b"the first dump").await.expect("write");
    writer.finish_stream().await.expect("finish");
    let refused = writer.start_stream("dump").await;
    assert!(
        matches!(&refused, Err(RepoError::DuplicateStream(name)) if name == "dump"),
        "{refused:?}"
    );
    let id = writer.commit().await.expect("commit").id;
    assert_eq!(
        read(&repo, &id, "dump").await.expect("read"),
        b"the first dump"
    );
}

#[tokio::test]
async fn a_config_whose_chunker_sizes_were_edited_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}/repo", dir.path().display());
    Repository::init(&url, &key()).await.expect("init");
    let config = dir.path().join("repo/config");
    let text = std::fs::read_to_string(&config).expect("config");
    let mut value: serde_json::Value = serde_json::from_str(&text).expect("json");
    value["chunker"]["max"] = serde_json::json!(64);
    std::fs::write(&config, serde_json::to_vec(&value).expect("json")).expect("write");
    let Err(refused) = Repository::open(&url, &key()).await else {
        panic!("an edited config must be refused");
    };
    assert!(refused.to_string().contains("chunker"), "{refused}");
}

#[tokio::test]
async fn a_forged_prune_lock_in_the_bucket_does_not_block_backups() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}/repo", dir.path().display());
    let repo = Repository::init(&url, &key()).await.expect("init");
    // Bucket write access without the key: a prune lock refreshed ten years from now.
    let locks = dir.path().join("repo/locks");
    std::fs::create_dir_all(&locks).expect("locks dir");
    let forged = serde_json::json!({
        "kind": "prune",
        "refreshed": jiff::Timestamp::now().as_second() + 10 * 365 * 86400,
        "holder": "attacker",
    });
    std::fs::write(locks.join("prune-forged"), forged.to_string()).expect("forged lock");
    let id = put(&repo, &[("dump", b"still backed up")]).await;
    assert_eq!(
        read(&repo, &id, "dump").await.expect("read"),
        b"still backed up"
    );
}
