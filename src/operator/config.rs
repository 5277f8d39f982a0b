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
    /// Where volume copies are made: mover pods (docs/volumes.md, "Movers").
    #[command(flatten)]
    pub movers: MoverArgs,
}

/// Mover pods: they copy each volume's files between a snapshot and the repository on a node.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MoverArgs {
    /// Image of the mover pods: the operator's own image (it holds `rewind` at
    /// /usr/local/bin/rewind). Without it volumes are kept as CSI snapshots only, and each backup
    /// with volumes says so in a warning.
    #[arg(long, env = "REWIND_MOVER_IMAGE")]
    pub mover_image: Option<String>,
    /// imagePullPolicy of the mover pods (the cluster's default when unset).
    #[arg(long, env = "REWIND_MOVER_IMAGE_PULL_POLICY")]
    pub mover_image_pull_policy: Option<String>,
    /// The repository URL as the mover pods reach it, when it differs from --repository.
    /// A file:// repository is on the operator's own volume: movers cannot reach it.
    #[arg(long, env = "REWIND_MOVER_REPOSITORY")]
    pub mover_repository: Option<String>,
    /// Secret in the operator's namespace holding the repository master key, mounted into movers.
    #[arg(
        long,
        env = "REWIND_MOVER_KEY_SECRET",
        default_value = "rewind-repository-key"
    )]
    pub mover_key_secret: String,
    /// The key of that Secret holding the master key.
    #[arg(long, env = "REWIND_MOVER_KEY_SECRET_KEY", default_value = "key")]
    pub mover_key_secret_key: String,
    /// Secret in the operator's namespace whose entries become the movers' environment (the
    /// object store's AWS_ENDPOINT, AWS_REGION, credentials, ...).
    #[arg(long, env = "REWIND_MOVER_ENV_SECRET")]
    pub mover_env_secret: Option<String>,
    /// Who movers run as: `any-owner` (root with only DAC_OVERRIDE for backups and CHOWN,
    /// DAC_OVERRIDE, FOWNER, FSETID for restores: Pod Security baseline; every file whatever its
    /// owner) or `single-user:UID:GID` (Pod Security restricted; files that user cannot read fail).
    #[arg(long, env = "REWIND_MOVER_ACCESS", default_value = "any-owner")]
    pub mover_access: String,
    /// nodeSelector of the mover pods, `key=value,key=value`.
    #[arg(long, env = "REWIND_MOVER_NODE_SELECTOR", default_value = "")]
    pub mover_node_selector: String,
    /// Taint keys the mover pods tolerate (any value and effect), comma-separated.
    #[arg(long, env = "REWIND_MOVER_TOLERATIONS", default_value = "")]
    pub mover_tolerations: String,
    /// Resource requests of the mover container, `cpu=100m,memory=128Mi`.
    #[arg(
        long,
        env = "REWIND_MOVER_REQUESTS",
        default_value = "cpu=100m,memory=128Mi"
    )]
    pub mover_requests: String,
    /// Resource limits of the mover container, `memory=512Mi`.
    #[arg(long, env = "REWIND_MOVER_LIMITS", default_value = "memory=512Mi")]
    pub mover_limits: String,
    /// Volumes copied at the same time by one backup.
    #[arg(long, env = "REWIND_MOVER_PARALLEL", default_value_t = 4)]
    pub mover_parallel: u16,
    /// ServiceAccount in the operator's namespace that database worker pods run as (with the
    /// mover settings above). Each worker gets a Role allowing exec into its one database pod,
    /// bound to this account, for as long as it runs.
    #[arg(
        long,
        env = "REWIND_WORKER_SERVICE_ACCOUNT",
        default_value = "rewind-worker"
    )]
    pub worker_service_account: String,
    /// `IP:PORT` of the API server as worker pods must reach it, for clusters whose pods cannot
    /// use the `kubernetes` Service (no kube-proxy); its certificate must name
    /// `kubernetes.default.svc`. Unset on ordinary clusters.
    #[arg(long, env = "REWIND_WORKER_API_ADDRESS")]
    pub worker_api_address: Option<String>,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log pipelines.
    Json,
    /// Human-readable lines, for a terminal.
    Text,
}

/// The movers this operator runs, from its flags (pure): Off with the reason when no image is
/// configured or the repository is on the operator's own disk; an error for a malformed flag.
pub fn movers(
    args: &RunArgs,
) -> Result<crate::mover::settings::Movers, crate::mover::settings::SettingsError> {
    use crate::mover::settings::{
        MoverResources, MoverSettings, Movers, access, api_address, key_values,
        reachable_by_movers, tolerations,
    };
    let flags = &args.movers;
    let Some(image) = flags.mover_image.clone() else {
        return Ok(Movers::Off(
            "the operator has no mover image (--mover-image, chart value movers.image)".into(),
        ));
    };
    let repository = flags
        .mover_repository
        .clone()
        .unwrap_or_else(|| args.repository.clone());
    if let Err(err) = reachable_by_movers(&repository) {
        if flags.mover_repository.is_some() {
            return Err(err);
        }
        return Ok(Movers::Off(format!(
            "the repository {repository} is on the operator's own volume, which mover pods cannot reach: use an object store (s3://, gs://, az://)"
        )));
    }
    Ok(Movers::On {
        settings: Box::new(MoverSettings {
            image,
            image_pull_policy: flags.mover_image_pull_policy.clone(),
            namespace: args.namespace.clone(),
            repository,
            key_secret: flags.mover_key_secret.clone(),
            key_secret_key: flags.mover_key_secret_key.clone(),
            repository_env_secret: flags.mover_env_secret.clone(),
            resources: MoverResources {
                requests: key_values("--mover-requests", &flags.mover_requests)?,
                limits: key_values("--mover-limits", &flags.mover_limits)?,
            },
            node_selector: key_values("--mover-node-selector", &flags.mover_node_selector)?,
            tolerations: tolerations(&flags.mover_tolerations),
            access: access(&flags.mover_access)?,
            worker_service_account: flags.worker_service_account.clone(),
            worker_api_address: flags
                .worker_api_address
                .as_deref()
                .map(api_address)
                .transpose()?,
        }),
        parallel: usize::from(flags.mover_parallel.max(1)),
    })
}
