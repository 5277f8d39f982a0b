//! Webhook notifications end to end: a real operator process posts finished backups and
//! restores to a real HTTP receiver in this test, once each, retrying a receiver that fails.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;
use support::operator::Operator;
use support::{Bed, status_of, unique};

const DONE: Duration = Duration::from_secs(120);

/// An HTTP receiver on localhost recording every JSON body it is sent. It answers 500 to the
/// first notice of any object whose name starts with `flaky`, 200 otherwise.
struct Receiver {
    url: String,
    notices: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a port");
        let url = format!(
            "http://{}/hooks/rewind",
            listener.local_addr().expect("address")
        );
        let notices = Arc::new(Mutex::new(Vec::<Value>::new()));
        let recorded = notices.clone();
        std::thread::spawn(move || {
            for connection in listener.incoming().flatten() {
                let mut reader = BufReader::new(connection);
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let notice: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let name = notice["name"].as_str().unwrap_or_default().to_string();
                let status = {
                    let mut notices = recorded.lock().expect("notices");
                    let earlier = notices
                        .iter()
                        .filter(|n| n["name"] == name.as_str())
                        .count();
                    notices.push(notice);
                    if name.starts_with("flaky") && earlier == 0 {
                        "500 Internal Server Error"
                    } else {
                        "200 OK"
                    }
                };
                let _ = reader.get_mut().write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                );
            }
        });
        Receiver { url, notices }
    }

    fn notices_of(&self, name: &str) -> Vec<Value> {
        self.notices
            .lock()
            .expect("notices")
            .iter()
            .filter(|n| n["name"] == name)
            .cloned()
            .collect()
    }
}

/// The receiver and the operator of this test binary; the operator reads the receiver's URL
/// from a file, as it would from a mounted Secret.
fn setup(bed: &Bed) -> (&'static Receiver, &'static Operator) {
    static RECEIVER: OnceLock<(Receiver, tempfile::TempDir)> = OnceLock::new();
    let (receiver, dir) = RECEIVER.get_or_init(|| {
        let receiver = Receiver::start();
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("url"), format!("{}\n", receiver.url)).expect("url file");
        (receiver, dir)
    });
    let url_file = dir.path().join("url").to_string_lossy().to_string();
    let url_file: &'static str = Box::leak(url_file.into_boxed_str());
    let operator = Operator::shared(bed, &["--notify-webhook-url-file", url_file]);
    (receiver, operator)
}

fn wait_notified(bed: &Bed, operator: &Operator, kind: &str, name: &str) -> Value {
    bed.wait_until(
        &format!("{kind} {name} to record its notification"),
        DONE,
        || {
            let status = status_of(bed, kind, name);
            status["notification"]["sentPhase"]
                .is_string()
                .then_some(status)
        },
        || {
            format!(
                "status: {}\noperator log:\n{}",
                status_of(bed, kind, name),
                operator.log_tail()
            )
        },
    )
}

#[test]
fn a_finished_backup_and_its_restore_are_each_posted_to_the_webhook_once() {
    let bed = Bed::get();
    let (receiver, operator) = setup(&bed);
    let account = unique("notified");
    let project = bed.project("notified", &account);
    let ns = project.name.clone();
    bed.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {ns}}}\ndata: {{currency: EUR}}\n"
    ));
    let backup = unique("nightly");
    bed.apply(&format!(
        "apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}, notes: before the release}}\n"
    ));
    let status = wait_notified(&bed, operator, "accountbackup", &backup);
    assert_eq!(status["phase"], "Completed", "{status}");
    assert_eq!(status["notification"]["sentPhase"], "Completed", "{status}");
    assert!(status["notification"]["sentAt"].is_string(), "{status}");
    let notices = receiver.notices_of(&backup);
    assert_eq!(notices.len(), 1, "{notices:?}");
    let notice = &notices[0];
    assert_eq!(notice["kind"], "AccountBackup");
    assert_eq!(notice["account"], account.as_str());
    assert_eq!(notice["phase"], "Completed");
    assert_eq!(notice["notes"], "before the release");
    assert_eq!(notice["projects"], serde_json::json!([ns]));
    assert!(notice["size"].as_u64().is_some(), "{notice}");

    let target = format!("{ns}-copy");
    let restore = unique("undo");
    bed.apply(&format!(
        "apiVersion: rewind.dev/v1alpha1\nkind: ProjectRestore\nmetadata: {{name: {restore}}}\nspec:\n  account: {account}\n  backup: {backup}\n  targetNamespaces: {{{ns}: {target}}}\n"
    ));
    let restored = wait_notified(&bed, operator, "projectrestore", &restore);
    let _ = bed.kubectl(&["delete", "namespace", &target, "--wait=false"]);
    assert_eq!(restored["phase"], "Completed", "{restored}");
    let notices = receiver.notices_of(&restore);
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["kind"], "ProjectRestore");
    assert_eq!(notices[0]["backup"], backup.as_str());
    assert_eq!(notices[0]["targetNamespaces"][&ns], target.as_str());
    assert_eq!(notices[0]["account"], account.as_str());
    // Stamped at admission: whoever kubectl authenticated as, not a name the client chose.
    let whoami = bed.kubectl_ok(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(notices[0]["requestedBy"], whoami.trim(), "{}", notices[0]);

    // Later reconciles (the status write itself triggers one) do not notify again.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(receiver.notices_of(&backup).len(), 1);
    assert_eq!(receiver.notices_of(&restore).len(), 1);
}

#[test]
fn a_failed_backup_is_notified_and_a_failing_webhook_is_retried_with_the_error_in_status() {
    let bed = Bed::get();
    let (receiver, operator) = setup(&bed);
    let backup = unique("flaky");
    let account = unique("nobody");
    bed.apply(&format!(
        "apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}}}\n"
    ));
    let first_failure = bed.wait_until(
        "the first delivery to fail",
        DONE,
        || {
            let status = status_of(&bed, "accountbackup", &backup);
            (status["notification"]["failedAttempts"] == 1).then_some(status)
        },
        || operator.log_tail(),
    );
    assert_eq!(first_failure["phase"], "Failed", "{first_failure}");
    assert_eq!(
        first_failure["notification"]["lastError"], "the webhook answered HTTP 500",
        "{first_failure}"
    );
    let status = wait_notified(&bed, operator, "accountbackup", &backup);
    assert_eq!(status["notification"]["sentPhase"], "Failed", "{status}");
    assert!(status["notification"]["lastError"].is_null(), "{status}");
    let notices = receiver.notices_of(&backup);
    assert_eq!(notices.len(), 2, "one refused, one accepted: {notices:?}");
    assert_eq!(notices[1]["phase"], "Failed");
    assert!(
        notices[1]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("rewind.dev/account="),
        "{notices:?}"
    );
    let events = bed.kubectl_ok(&[
        "get",
        "events",
        "-A",
        "--field-selector",
        &format!("involvedObject.name={backup},reason=NotificationFailed"),
        "-o",
        "name",
    ]);
    assert!(
        !events.trim().is_empty(),
        "a Warning event names the failed delivery"
    );
    let log = std::fs::read_to_string(&operator.log).unwrap_or_default();
    assert!(
        !log.contains("/hooks/rewind"),
        "the webhook URL never appears in the log"
    );
}
