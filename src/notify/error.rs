//! Why a webhook delivery failed. Messages never contain the URL (it may carry a token).

/// Why a delivery failed.
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
