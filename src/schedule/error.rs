//! Errors of the BackupSchedule controller, each with a static category.

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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_failures_are_labelled_kubernetes() {
        let err = ScheduleError::Kube(kube::Error::LinesCodecMaxLineLengthExceeded);
        assert_eq!(err.category(), "kubernetes");
    }
}
