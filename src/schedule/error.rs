//! Errors of the BackupSchedule controller, each with a category and a permanent/transient split.

/// Why a schedule reconcile did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The Kubernetes API refused or failed a request.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl ScheduleError {
    /// A static label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kubernetes",
        }
    }

    /// A request the API server refused as such (bad request, forbidden, invalid) is refused
    /// again: retried rarely. Everything else is retried with backoff.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Kube(kube::Error::Api(status)) if matches!(status.code, 400 | 403 | 422))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_failures_are_labelled_kubernetes() {
        let err = ScheduleError::Kube(kube::Error::LinesCodecMaxLineLengthExceeded);
        assert_eq!(err.category(), "kubernetes");
        assert!(!err.is_permanent());
    }
}
