//! What the notifier writes: the POST to the webhook, and the delivery record in the object's
//! `status.notification` under its own field manager.

use std::path::PathBuf;
use std::time::Duration;

use kube::Api;
use serde::de::DeserializeOwned;

use super::error::NotifyError;
use crate::api::NotificationStatus;

/// The field manager of `status.notification`: separate from the controllers', so their
/// status writes (which never mention the field) leave it in place.
pub const FIELD_MANAGER: &str = "rewind-notifier";

/// How long one delivery may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Records the delivery state in the object's status.
pub async fn record<K>(
    api: &Api<K>,
    name: &str,
    status: &NotificationStatus,
) -> Result<(), kube::Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({ "notification": status });
    crate::status::apply_status_as(api, name, &patch, FIELD_MANAGER).await?;
    Ok(())
}
