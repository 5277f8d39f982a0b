//! Why a mover cannot be built for a volume: each case says what to do, with a static category.

/// A mover that must not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoverError {
    /// The operation has no time left: a pod started now would be killed at once.
    #[error(
        "the operation's deadline has passed before the volume {project}/{pvc} was moved: raise --operation-timeout (REWIND_OPERATION_TIMEOUT) or move fewer volumes per backup"
    )]
    NoTimeLeft {
        /// The volume's project.
        project: String,
        /// The volume's PVC.
        pvc: String,
    },
    /// The operation has no time left for a database worker.
    #[error(
        "the operation's deadline has passed before the database pod {namespace}/{pod} was reached: raise --operation-timeout (REWIND_OPERATION_TIMEOUT)"
    )]
    NoTimeLeftForDatabase {
        /// The database pod's namespace.
        namespace: String,
        /// The database pod.
        pod: String,
    },
    /// The backup records no handle of the volume's snapshot, so no PVC can be made from it.
    #[error(
        "the backup records no snapshot handle for {project}/{pvc}: its snapshot never became ready, so there is nothing to copy"
    )]
    NoSnapshotHandle {
        /// The volume's project.
        project: String,
        /// The volume's PVC.
        pvc: String,
    },
}

impl MoverError {
    /// A static label for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::NoTimeLeft { .. } | Self::NoTimeLeftForDatabase { .. } => "DeadlineExceeded",
            Self::NoSnapshotHandle { .. } => "NoSnapshotHandle",
        }
    }

    /// Both are permanent: retrying builds the same refusal.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::NoTimeLeft { .. }
            | Self::NoTimeLeftForDatabase { .. }
            | Self::NoSnapshotHandle { .. } => true,
        }
    }
}
