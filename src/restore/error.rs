//! Errors of the ProjectRestore controller, each with a category and a permanent/transient split.

/// Errors of a restore reconcile.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The finalizer could not be managed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// The restore work failed as a whole (e.g. the repository is unreachable).
    #[error("{0}")]
    Work(String),
}

impl RestoreError {
    /// A static label for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kubernetes",
            Self::Finalizer(_) => "finalizer",
            Self::Work(_) => "restore",
        }
    }

    /// Permanent errors are retried rarely (a request the API server refuses as such will be
    /// refused again); transient ones with backoff.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Kube(kube::Error::Api(status)) if matches!(status.code, 400 | 403 | 422))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_requests_are_permanent_and_repository_trouble_is_not() {
        let refused = RestoreError::Kube(kube::Error::Api(
            kube::core::Status::failure("forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        ));
        assert!(refused.is_permanent());
        assert!(!RestoreError::Work("the repository is unreachable".into()).is_permanent());
        assert_eq!(RestoreError::Work(String::new()).category(), "restore");
    }
}
