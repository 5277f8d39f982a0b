//! The repository on a real S3 protocol server (the test bed's), through the same code as file://.

mod support;

use std::collections::BTreeMap;

use rewind::repository::{MasterKey, Repository};
use support::{Bed, unique};
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_round_trips_and_checks_on_s3() {
    let bed = Bed::get();
    let Some(endpoint) = bed.require("S3_ENDPOINT", "the S3 repository test") else {
        return;
    };
    let bucket = bed.var("S3_BUCKET").unwrap_or("rewind-testbed").to_string();
    // object_store reads AWS_* from the environment; this binary's only test sets them first.
    for (key, value) in [
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", bed.var("AWS_REGION").unwrap_or("us-east-1")),
        (
            "AWS_ACCESS_KEY_ID",
            bed.var("AWS_ACCESS_KEY_ID").unwrap_or_default(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY",
            bed.var("AWS_SECRET_ACCESS_KEY").unwrap_or_default(),
        ),
    ] {
        // SAFETY: no other thread of this test binary reads or writes the environment.
        unsafe { std::env::set_var(key, value) };
    }
    let url = format!("s3://{bucket}/{}", unique("repo"));
    let key = MasterKey::from_text(&"c3".repeat(32)).expect("key");
    let repo = Repository::init(&url, &key).await.expect("init on S3");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut writer = repo
        .start_snapshot(BTreeMap::from([("account".into(), "acme".into())]))
        .await
        .expect("writer");
    writer.start_stream("dump").await.expect("stream");
    writer.write(&data).await.expect("write");
    let id = writer.commit().await.expect("commit").id;

    let reopened = Repository::open(&url, &key).await.expect("open");
    let mut back = Vec::new();
    reopened
        .read_stream(&id, "dump")
        .await
        .expect("reader")
        .read_to_end(&mut back)
        .await
        .expect("read");
    assert!(back == data, "S3 returns the bytes written");
    assert_eq!(reopened.list_snapshots().await.expect("ls").len(), 1);
    assert!(reopened.check().await.expect("check").problems.is_empty());
    reopened.delete_snapshot(&id).await.expect("forget");
    let pruned = reopened.prune().await.expect("prune");
    assert!(pruned.packs_deleted >= 1, "{pruned:?}");
}
