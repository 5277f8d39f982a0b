//! Errors of the repository, each naming what is wrong and what to do.

/// Why a repository operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The object store failed or is unreachable.
    #[error("object store: {0}")]
    Backend(#[from] object_store::Error),
    /// The URL names no supported store.
    #[error(
        "{url:?} is not a repository URL: use file:///path, s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or memory://"
    )]
    BadUrl {
        /// The URL given.
        url: String,
    },
    /// No repository at that place.
    #[error("no repository at {0}: create one with `rewind repo init`")]
    NotARepository(String),
    /// `init` found one already.
    #[error("a repository already exists at {0}; refusing to overwrite it")]
    AlreadyExists(String),
    /// The master key does not open the repository keys.
    #[error("the master key does not open this repository: check REWIND_REPO_KEY / --key-file")]
    WrongKey,
    /// The master key given is not usable.
    #[error("the master key is unusable: {0}")]
    BadKey(String),
    /// A format version this build does not know.
    #[error(
        "{object} has format version {found}; this build reads version {supported}: upgrade rewind"
    )]
    UnsupportedVersion {
        /// Which object.
        object: String,
        /// Its version.
        found: u32,
        /// What we read.
        supported: u32,
    },
    /// An object is missing that a snapshot needs.
    #[error("{object} is missing from the repository")]
    Missing {
        /// Which object.
        object: String,
    },
    /// An object does not decrypt, decode or hash right.
    #[error("{object} is damaged: {reason}")]
    Corrupt {
        /// Which object.
        object: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No such snapshot or stream.
    #[error("{0} not found")]
    NotFound(String),
    /// Another operation holds the repository (prune beside writers).
    #[error("the repository is busy: {0}; try again when it ends")]
    Busy(String),
    /// A snapshot already has a stream of this name.
    #[error("stream {0} is already in this snapshot: give each stream its own name")]
    DuplicateStream(String),
    /// Local I/O failed (stdin, stdout, files).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl RepoError {
    /// A static label for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Backend(_) => "backend",
            Self::BadUrl { .. } => "bad-url",
            Self::NotARepository(_) => "not-a-repository",
            Self::AlreadyExists(_) => "already-exists",
            Self::WrongKey => "wrong-key",
            Self::BadKey(_) => "bad-key",
            Self::UnsupportedVersion { .. } => "unsupported-version",
            Self::Missing { .. } => "missing-object",
            Self::Corrupt { .. } => "corrupt-object",
            Self::NotFound(_) => "not-found",
            Self::Busy(_) => "busy",
            Self::DuplicateStream(_) => "duplicate-stream",
            Self::Io(_) => "io",
        }
    }

    /// Retrying cannot help: the data, key or configuration is wrong.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Self::Backend(_) | Self::Busy(_) | Self::Io(_))
    }

    pub(crate) fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }
}
