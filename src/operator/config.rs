//! `rewind run` configuration: flags with environment fallbacks, documented in `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Run the operator: the AccountBackup controller, with leader election, probes and metrics.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Repository URL: file:///var/lib/rewind, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix.
    #[arg(
        long,
        env = "REWIND_REPOSITORY",
        default_value = "file:///var/lib/rewind"
    )]
    pub repository: String,
    /// File holding the repository master key (mount it from a Secret). REWIND_REPO_KEY may hold the key itself.
    #[arg(long, env = "REWIND_REPOSITORY_KEY_FILE")]
    pub repository_key_file: Option<PathBuf>,
    /// Namespace the operator runs in: holds its leader Lease and the per-account lock Leases.
    #[arg(long, env = "POD_NAMESPACE", default_value = "rewind-system")]
    pub namespace: String,
    /// This replica's identity in leader election (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Run without leader election (a single replica, e.g. local development).
    #[arg(long, env = "REWIND_NO_LEADER_ELECTION")]
    pub no_leader_election: bool,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "REWIND_PROBE_ADDR", default_value = "0.0.0.0:8080")]
    pub probe_addr: SocketAddr,
    /// How many backups may be Running at the same time, across accounts (one per account always); the rest wait in Queued. 0: no limit.
    #[arg(long, env = "REWIND_MAX_CONCURRENT_BACKUPS", default_value_t = 4)]
    pub max_concurrent_backups: u16,
    /// How often the repository is compared with the cluster, recreating AccountBackups whose objects were lost (Go duration; 0s: never).
    #[arg(long, env = "REWIND_SYNC_INTERVAL", default_value = "5m")]
    pub sync_interval: String,
    /// A backup or restore Running longer than this fails with DeadlineExceeded (Go duration).
    #[arg(long, env = "REWIND_OPERATION_TIMEOUT", default_value = "6h")]
    pub operation_timeout: String,
    /// How long a volume snapshot may take to become readyToUse (Go duration).
    #[arg(long, env = "REWIND_SNAPSHOT_TIMEOUT", default_value = "10m")]
    pub snapshot_timeout: String,
    /// How long one database dump may take (Go duration).
    #[arg(long, env = "REWIND_DUMP_TIMEOUT", default_value = "1h")]
    pub dump_timeout: String,
    /// How long a pre- or post-backup hook may take (Go duration); a pod's `rewind.dev/hook-timeout` may only shorten it.
    #[arg(long, env = "REWIND_HOOK_TIMEOUT", default_value = "60s")]
    pub hook_timeout: String,
    /// File holding a webhook URL (mount it from a Secret): each finished backup and restore is
    /// POSTed there as JSON once (docs/notifications.md). Read at every delivery.
    #[arg(long, env = "REWIND_NOTIFY_WEBHOOK_URL_FILE")]
    pub notify_webhook_url_file: Option<PathBuf>,
    /// Log format: json (one object per line) or text.
    #[arg(long, env = "REWIND_LOG_FORMAT", default_value = "json")]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log pipelines.
    Json,
    /// Human-readable lines, for a terminal.
    Text,
}
