//! Webhook notifications: one JSON POST when a backup or restore finishes (completes, partly
//! fails or fails), to a URL read from a file mounted from a Secret. The delivery is recorded
//! in the object's `status.notification`, so an outcome is notified once, across restarts.

use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::context::Context;
use super::decide::{self, Step};
use super::notice::{self, Notified};

/// The field manager of `status.notification`: separate from the controllers', so their
/// status writes (which never mention the field) leave it in place.
pub const FIELD_MANAGER: &str = "rewind-notifier";

/// How long one delivery may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a delivery failed. Messages never contain the URL (it may carry a token).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The mounted URL file is missing or unreadable.
    #[error(
        "the webhook URL file cannot be read ({0}): check the Secret named in the chart's notifications.webhookSecret"
    )]
    UrlFile(String),
    /// The file does not hold an http(s) URL.
    #[error("the webhook URL file does not hold an http:// or https:// URL")]
    BadUrl,
    /// Connecting or sending failed, or took longer than 10 s.
    #[error("the webhook could not be reached: {0}")]
    Unreachable(String),
    /// The receiver answered with an error status.
    #[error("the webhook answered HTTP {0}")]
    Refused(u16),
    /// No HTTP client could be built (TLS backend).
    #[error("no HTTP client for webhooks could be built: {0}")]
    Client(String),
}

impl NotifyError {
    /// A short label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::UrlFile(_) | Self::BadUrl | Self::Client(_) => "config",
            Self::Unreachable(_) => "network",
            Self::Refused(_) => "receiver",
        }
    }
}

/// Delivers notices to the configured webhook.
pub struct Notifier {
    url_file: PathBuf,
    http: reqwest::Client,
}

impl Notifier {
    /// A notifier reading its URL from `url_file` at every delivery (a rotated Secret applies
    /// without a restart). Fails when no HTTP client with the delivery timeout can be built (the
    /// operator then refuses to start rather than deliver without a timeout).
    pub fn new(url_file: PathBuf) -> Result<Self, NotifyError> {
        let http = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .build()
            .map_err(|e| NotifyError::Client(e.to_string()))?;
        Ok(Self { url_file, http })
    }

    /// POSTs `notice` as JSON; any 2xx answer is a delivery.
    pub async fn deliver(&self, notice: &serde_json::Value) -> Result<(), NotifyError> {
        let text = tokio::fs::read_to_string(&self.url_file)
            .await
            .map_err(|e| NotifyError::UrlFile(e.kind().to_string()))?;
        let url = reqwest::Url::parse(text.trim()).map_err(|_| NotifyError::BadUrl)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(NotifyError::BadUrl);
        }
        let response = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            // Displaying a JSON value cannot fail (unlike to_vec, whose error had become an empty body).
            .body(notice.to_string())
            .send()
            .await
            .map_err(|e| NotifyError::Unreachable(e.without_url().to_string()))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(NotifyError::Refused(response.status().as_u16()))
        }
    }
}

/// Requeue after the shortest of `waits`; with none, wait for a change.
pub fn sooner_of(waits: &[Option<Duration>]) -> kube::runtime::controller::Action {
    match waits.iter().flatten().min() {
        Some(wait) => kube::runtime::controller::Action::requeue(*wait),
        None => kube::runtime::controller::Action::await_change(),
    }
}

/// Notifies outcome `phase` of `object` when it is due and records the delivery in its status.
/// Returns when to look again (a failed delivery waiting for its retry), if ever. The recorded
/// delivery is read again from the API server before sending, so a reconcile on a stale
/// cached object does not notify twice.
pub async fn notify_outcome<K>(
    ctx: &Context,
    api: &Api<K>,
    object: &K,
    phase: &impl serde::Serialize,
) -> Option<Duration>
where
    K: Notified + Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let notifier = ctx.notifier.as_ref()?;
    if !object.wants_notice() {
        return None;
    }
    let phase = notice::phase_name(phase);
    let phase = phase.as_str();
    let name = object.name_any();
    if decide::next_step(phase, object.notification().as_ref(), Timestamp::now()) == Step::Nothing {
        return None;
    }
    let recorded = match api.get_status(&name).await {
        Ok(fresh) => fresh.notification(),
        Err(err) => {
            warn!(object = %name, error = %err, "reading the notification state failed; retrying");
            return Some(Duration::from_secs(10));
        }
    };
    let now = Timestamp::now();
    match decide::next_step(phase, recorded.as_ref(), now) {
        Step::Nothing => None,
        Step::RetryIn(wait) => Some(wait),
        Step::Send => {
            let result = notifier.deliver(&object.notice(phase)).await;
            let (event_type, reason, note) = match &result {
                Ok(()) => (
                    EventType::Normal,
                    "Notified",
                    format!("webhook notified of {phase}"),
                ),
                Err(err) => (
                    EventType::Warning,
                    "NotificationFailed",
                    format!("webhook notification of {phase} failed: {err}"),
                ),
            };
            if let Err(err) = &result {
                warn!(object = %name, phase, category = err.category(), error = %err, "webhook notification failed");
            } else {
                info!(object = %name, phase, "webhook notified");
            }
            let status = decide::after_delivery(
                phase,
                recorded.as_ref(),
                result.map_err(|e| e.to_string()),
                now,
            );
            let gave_up = status.failed_attempts >= decide::MAX_ATTEMPTS;
            let retry = (status.failed_attempts > 0 && !gave_up)
                .then(|| decide::backoff(status.failed_attempts));
            let note = if gave_up {
                format!("{note}; gave up after {} attempts", decide::MAX_ATTEMPTS)
            } else {
                note
            };
            let patch = serde_json::json!({ "notification": status });
            if let Err(err) =
                crate::status::apply_status_as(api, &name, &patch, FIELD_MANAGER).await
            {
                warn!(object = %name, error = %err, "recording the notification failed; retrying");
                return Some(Duration::from_secs(10));
            }
            let event = Event {
                type_: event_type,
                reason: reason.into(),
                note: Some(note),
                action: "Notify".into(),
                secondary: None,
            };
            if let Err(err) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
                warn!(error = %err, "publishing an event failed");
            }
            retry
        }
    }
}
