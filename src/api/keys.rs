//! Every label, annotation and finalizer key Rewind reads or writes: one home, so who may
//! write each one (docs/security.md) is answered in one place.

// Labels.

/// Label on a restored namespace naming the backup it came from.
pub const RESTORED_FROM_LABEL: &str = "rewind.dev/restored-from";

/// Label that keeps a PVC out of volume snapshots.
pub const EXCLUDE_LABEL: &str = "rewind.dev/exclude";

/// Label that marks a Secret as a resource token (regenerated on restore).
pub const TOKEN_LABEL: &str = "rewind.dev/token";

/// Label that makes a namespace a project of an account.
pub const ACCOUNT_LABEL: &str = "rewind.dev/account";

/// Label on a VolumeSnapshotContent whose snapshot a backup (by UID) took and has not recorded.
pub const PENDING_LABEL: &str = "rewind.dev/pending-for-backup";

/// Label on every AccountBackup a schedule creates: the schedule's name.
pub const SCHEDULE_LABEL: &str = "rewind.dev/schedule";

/// Label naming the ProjectRestore that created a namespace.
pub const RESTORE_LABEL: &str = "rewind.dev/restore";

/// Label of an AccountBackup recreated from the repository.
pub const IMPORTED_LABEL: &str = "rewind.dev/imported";

/// Label on a mover pod and its PVC (in the operator's namespace): `backup` (copies a volume into
/// the repository) or `restore` (fills a volume from it); on a database worker pod and its Role
/// and RoleBinding (in the database's namespace): `dump` or `load`. Only the operator creates
/// objects in its namespace; cleanup checks the owner reference of those elsewhere.
pub const MOVER_LABEL: &str = "rewind.dev/mover";
/// On a PersistentVolume a restore mover filled: the mover's name, so a restarted operator
/// finds the volume after its staging claim is gone.
pub const FILLED_BY_LABEL: &str = "rewind.dev/filled-by";
/// On that PersistentVolume: the reclaim policy it had before the hand-over kept it (Retain),
/// given back once the restored claim is bound.
pub const RECLAIM_POLICY_ANNOTATION: &str = "rewind.dev/reclaim-policy";

/// Label on a mover's objects: the UID of the AccountBackup or ProjectRestore they work for
/// (also their controller owner reference, which is what cleanup checks).
pub const OPERATION_UID_LABEL: &str = "rewind.dev/operation-uid";

/// Label on a mover's objects: the project (namespace) whose volume it moves.
pub const PROJECT_LABEL: &str = "rewind.dev/project";

// Annotations.

/// Annotation on a database worker's objects: the database pod it execs into.
pub const DATABASE_POD_ANNOTATION: &str = "rewind.dev/database-pod";

/// Annotation naming who asked for a backup (a user, a tool, a schedule).
pub const REQUESTED_BY_ANNOTATION: &str = "rewind.dev/requested-by";

/// Annotation on a project namespace that holds the account's operations in `Queued`.
pub const BUSY_ANNOTATION: &str = "rewind.dev/busy";

/// Marks a pod as a database and names its engine.
pub const DATABASE_ANNOTATION: &str = "rewind.dev/database";

/// The container to exec into (default: the pod's first container).
pub const CONTAINER_ANNOTATION: &str = "rewind.dev/database-container";

/// `custom` engine: the command that writes a dump to stdout (run by `sh -c`).
pub const BACKUP_COMMAND_ANNOTATION: &str = "rewind.dev/backup-command";

/// `custom` engine: the command that reads a dump from stdin (run by `sh -c`).
pub const RESTORE_COMMAND_ANNOTATION: &str = "rewind.dev/restore-command";

/// Runs before the snapshots, over exec (`sh -c`).
pub const PRE_BACKUP_ANNOTATION: &str = "rewind.dev/pre-backup";

/// Runs after the snapshots, even when they failed.
pub const POST_BACKUP_ANNOTATION: &str = "rewind.dev/post-backup";

/// Annotation on every AccountBackup a schedule creates: its slot (RFC 3339, UTC).
pub const SLOT_ANNOTATION: &str = "rewind.dev/slot";

/// Annotation with that ProjectRestore's uid: proves a namespace is ours on resume.
pub const RESTORE_UID_ANNOTATION: &str = "rewind.dev/restore-uid";

/// Annotation naming the repository snapshot an imported AccountBackup stands for.
pub const IMPORTED_FROM_ANNOTATION: &str = "rewind.dev/imported-from-snapshot";

/// Per-pod hook timeout.
pub const HOOK_TIMEOUT_ANNOTATION: &str = "rewind.dev/hook-timeout";

/// Per-pod on-error policy: fail or continue.
pub const HOOK_ON_ERROR_ANNOTATION: &str = "rewind.dev/hook-on-error";

/// Annotation on a mover's objects: the PVC whose data it moves (a PVC name may be longer than a
/// label value may be).
pub const PVC_ANNOTATION: &str = "rewind.dev/pvc";

/// Annotation on a restore mover's objects: the namespace the filled volume is handed to.
pub const TARGET_NAMESPACE_ANNOTATION: &str = "rewind.dev/target-namespace";

// Finalizers.

/// Our finalizer on the temporary content: it keeps the object until the CSI sidecar has
/// deleted the physical snapshot (an unbound content without a finalizer would vanish at once,
/// before the sidecar ever saw it being deleted).
pub const DELETE_FINALIZER: &str = "rewind.dev/delete-physical-snapshot";

/// The finalizer that removes a half-done restore's namespaces.
pub const RESTORE_FINALIZER: &str = "rewind.dev/clean-up-restore";

/// The finalizer that releases a backup's data before the object goes.
pub const BACKUP_FINALIZER: &str = "rewind.dev/release-backup-data";

/// The prefix of every Pod Security Admission label (`enforce`, `audit`, `warn` and their versions).
pub const POD_SECURITY_PREFIX: &str = "pod-security.kubernetes.io/";
