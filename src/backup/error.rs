//! Errors of the AccountBackup controller, each with a category and a permanent/transient split.

/// Why a backup reconcile did not finish.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The Kubernetes API refused or failed a request.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The repository could not store or release data.
    #[error("repository: {0}")]
    Repository(String),
    /// A physical volume snapshot could not be deleted.
    #[error("volume snapshot: {0}")]
    Snapshot(String),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// The backup is deleted while another replica still copies it: its release waits.
    #[error(
        "replica {replica} is still copying this backup: its deletion waits for that copy to end, or for that replica's lock to go stale"
    )]
    CopiedElsewhere {
        /// The replica named in the account's lock.
        replica: String,
    },
    /// A manifest could not be serialized (a bug: reported, not retried).
    #[error("encoding a manifest: {0}")]
    Encode(#[from] serde_json::Error),
}

impl BackupError {
    /// A static label for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kubernetes",
            Self::Repository(_) => "repository",
            Self::Snapshot(_) => "snapshot",
            Self::Finalizer(_) => "finalizer",
            Self::CopiedElsewhere { .. } => "copied-elsewhere",
            Self::Encode(_) => "encode",
        }
    }

    /// Permanent errors fail the backup; transient ones are retried with backoff.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Kube(kube::Error::Api(status)) => matches!(status.code, 400 | 403 | 422),
            Self::Kube(_)
            | Self::Repository(_)
            | Self::Snapshot(_)
            | Self::Finalizer(_)
            | Self::CopiedElsewhere { .. } => false,
            Self::Encode(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_outages_are_retried_not_fatal() {
        let err = BackupError::Repository("connection refused".into());
        assert_eq!(err.category(), "repository");
        assert!(!err.is_permanent());
    }
}
