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
    /// The repository could not be read; `permanent` when retrying cannot help (wrong key,
    /// the snapshot is gone).
    #[error("repository: {message}")]
    Repository {
        /// What went wrong, for people.
        message: String,
        /// Retrying cannot help.
        permanent: bool,
    },
    /// The backup records no repository snapshot: there is nothing to restore from.
    #[error(
        "AccountBackup {0} records no repository snapshot: restore another backup of the account"
    )]
    NoSnapshot(String),
}

impl RestoreError {
    /// A static label for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kubernetes",
            Self::Finalizer(_) => "finalizer",
            Self::Repository { .. } => "repository",
            Self::NoSnapshot(_) => "NoSnapshot",
        }
    }

    /// Whether this error ends the restore as Failed (retrying cannot help: the backup's data is
    /// gone or unreadable) rather than being retried.
    pub fn fails_the_restore(&self) -> bool {
        matches!(
            self,
            Self::Repository {
                permanent: true,
                ..
            } | Self::NoSnapshot(_)
        )
    }

    /// Permanent errors are retried rarely (a request the API server refuses as such will be
    /// refused again); transient ones with backoff.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Kube(kube::Error::Api(status)) => matches!(status.code, 400 | 403 | 422),
            Self::Kube(_) | Self::Finalizer(_) => false,
            Self::Repository { permanent, .. } => *permanent,
            Self::NoSnapshot(_) => true,
        }
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
        let unreachable = RestoreError::Repository {
            message: "the repository is unreachable".into(),
            permanent: false,
        };
        assert!(!unreachable.is_permanent());
        assert_eq!(unreachable.category(), "repository");
        assert!(RestoreError::NoSnapshot("nightly".into()).is_permanent());
    }
}
