//! Database pods and their dump/restore commands: annotation parsing and engine presets (pure).
//!
//! A pod annotated `rewind.dev/database: postgres|mysql|custom` is dumped over
//! exec. Presets read user and database from the container's own environment,
//! so no credential passes through the operator.

use crate::api::{
    BACKUP_COMMAND_ANNOTATION, CONTAINER_ANNOTATION, DATABASE_ANNOTATION,
    RESTORE_COMMAND_ANNOTATION,
};
use std::collections::BTreeMap;

/// A database engine with known commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// PostgreSQL: pg_dump custom format, pg_restore.
    Postgres,
    /// MySQL/MariaDB: mysqldump --single-transaction, mysql.
    Mysql,
    /// Commands from the pod's annotations.
    Custom,
}

impl Engine {
    /// The annotation value naming the engine.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
            Self::Custom => "custom",
        }
    }
}

/// One database to dump, as declared by a pod's annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseTarget {
    /// The pod.
    pub pod: String,
    /// The container to exec into, when named.
    pub container: Option<String>,
    /// The engine.
    pub engine: Engine,
    /// argv of the dump command (writes the dump to stdout).
    pub backup_command: Vec<String>,
    /// argv of the restore command (reads the dump from stdin).
    pub restore_command: Vec<String>,
}

/// Why a pod's database annotations cannot be used; the message says what to set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DatabaseSpecError {
    /// The engine is not one we know.
    #[error(
        "pod {pod}: rewind.dev/database={value:?} is not an engine: use postgres, mysql or custom"
    )]
    UnknownEngine {
        /// The pod.
        pod: String,
        /// The annotation's value.
        value: String,
    },
    /// `custom` without its commands.
    #[error(
        "pod {pod}: rewind.dev/database=custom needs the annotations rewind.dev/backup-command and rewind.dev/restore-command"
    )]
    MissingCustomCommand {
        /// The pod.
        pod: String,
    },
}

impl DatabaseSpecError {
    /// A static label for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::UnknownEngine { .. } => "unknown-engine",
            Self::MissingCustomCommand { .. } => "missing-command",
        }
    }
}

fn shell(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// pg_dump in custom format (what pg_restore reads), user and database from the container's env.
pub const POSTGRES_DUMP: &str = "exec pg_dump --format=custom --no-owner --no-privileges --username=\"${PGUSER:-${POSTGRES_USER:-postgres}}\" --dbname=\"${PGDATABASE:-${POSTGRES_DB:-postgres}}\"";
/// pg_restore into the container's database; stops at the first error so a failure is visible.
pub const POSTGRES_RESTORE: &str = "exec pg_restore --no-owner --no-privileges --clean --if-exists --exit-on-error --username=\"${PGUSER:-${POSTGRES_USER:-postgres}}\" --dbname=\"${PGDATABASE:-${POSTGRES_DB:-postgres}}\"";
/// mysqldump of the container's database in one consistent transaction.
pub const MYSQL_DUMP: &str = "MYSQL_PWD=\"${MYSQL_PWD:-${MYSQL_PASSWORD:-$MYSQL_ROOT_PASSWORD}}\" exec mysqldump --single-transaction --quick --routines --triggers --events -u\"${MYSQL_USER:-root}\" --databases \"${MYSQL_DATABASE}\"";
/// mysql reading a dump from stdin.
pub const MYSQL_RESTORE: &str = "MYSQL_PWD=\"${MYSQL_PWD:-${MYSQL_PASSWORD:-$MYSQL_ROOT_PASSWORD}}\" exec mysql -u\"${MYSQL_USER:-root}\"";

/// Reads a pod's annotations: `Ok(None)` for a pod that is not a database.
pub fn database_target(
    pod: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<Option<DatabaseTarget>, DatabaseSpecError> {
    let Some(value) = annotations.get(DATABASE_ANNOTATION) else {
        return Ok(None);
    };
    let container = annotations.get(CONTAINER_ANNOTATION).cloned();
    let (engine, backup, restore) = match value.trim() {
        "postgres" | "postgresql" => (
            Engine::Postgres,
            POSTGRES_DUMP.to_string(),
            POSTGRES_RESTORE.to_string(),
        ),
        "mysql" | "mariadb" => (
            Engine::Mysql,
            MYSQL_DUMP.to_string(),
            MYSQL_RESTORE.to_string(),
        ),
        "custom" => {
            let (Some(backup), Some(restore)) = (
                annotations.get(BACKUP_COMMAND_ANNOTATION),
                annotations.get(RESTORE_COMMAND_ANNOTATION),
            ) else {
                return Err(DatabaseSpecError::MissingCustomCommand {
                    pod: pod.to_string(),
                });
            };
            (Engine::Custom, backup.clone(), restore.clone())
        }
        other => {
            return Err(DatabaseSpecError::UnknownEngine {
                pod: pod.to_string(),
                value: other.to_string(),
            });
        }
    };
    Ok(Some(DatabaseTarget {
        pod: pod.to_string(),
        container,
        engine,
        backup_command: shell(&backup),
        restore_command: shell(&restore),
    }))
}

/// The workload a pod belongs to, from its controller owner reference (pure):
/// `Deployment/<name>` for a ReplicaSet `<name>-<hash>`, `StatefulSet/<name>`, else `Pod/<pod>`.
pub fn workload_of(pod: &str, owner: Option<(&str, &str)>) -> String {
    match owner {
        Some(("ReplicaSet", replica_set)) => match replica_set.rsplit_once('-') {
            Some((deployment, _hash)) => format!("Deployment/{deployment}"),
            None => format!("ReplicaSet/{replica_set}"),
        },
        Some((kind, name)) => format!("{kind}/{name}"),
        None => format!("Pod/{pod}"),
    }
}

/// The (kind, name) of a pod's controller owner.
pub fn controller_owner(pod: &k8s_openapi::api::core::v1::Pod) -> Option<(&str, &str)> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.as_str(), o.name.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn workload_follows_the_controller_owner() {
        assert_eq!(
            workload_of("db-7c9f-abcde", Some(("ReplicaSet", "db-7c9f"))),
            "Deployment/db"
        );
        assert_eq!(
            workload_of("pg-0", Some(("StatefulSet", "pg"))),
            "StatefulSet/pg"
        );
        assert_eq!(workload_of("lonely", None), "Pod/lonely");
    }

    #[test]
    fn pods_without_the_annotation_are_not_databases() {
        assert_eq!(database_target("web", &annotations(&[])), Ok(None));
    }

    #[test]
    fn postgres_preset_dumps_in_a_format_pg_restore_reads() {
        let target = database_target("db-0", &annotations(&[(DATABASE_ANNOTATION, "postgres")]))
            .expect("valid")
            .expect("a database");
        assert_eq!(target.engine, Engine::Postgres);
        assert_eq!(
            target.backup_command[..2],
            ["sh".to_string(), "-c".to_string()]
        );
        assert!(target.backup_command[2].contains("pg_dump --format=custom"));
        assert!(target.restore_command[2].contains("pg_restore"));
    }

    #[test]
    fn mysql_preset_uses_a_single_transaction() {
        let target = database_target(
            "db",
            &annotations(&[
                (DATABASE_ANNOTATION, "mysql"),
                (CONTAINER_ANNOTATION, "mysqld"),
            ]),
        )
        .expect("valid")
        .expect("a database");
        assert!(target.backup_command[2].contains("--single-transaction"));
        assert_eq!(target.container.as_deref(), Some("mysqld"));
    }

    #[test]
    fn custom_engine_needs_both_commands() {
        let err = database_target(
            "db",
            &annotations(&[
                (DATABASE_ANNOTATION, "custom"),
                (BACKUP_COMMAND_ANNOTATION, "cat /data"),
            ]),
        )
        .expect_err("missing restore command");
        assert!(err.to_string().contains("rewind.dev/restore-command"));
    }

    #[test]
    fn unknown_engine_is_refused_with_the_choices() {
        let err = database_target("db", &annotations(&[(DATABASE_ANNOTATION, "oracle")]))
            .expect_err("unknown");
        assert!(err.to_string().contains("postgres, mysql or custom"));
    }
}
