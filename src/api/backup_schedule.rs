//! `BackupSchedule`: creates AccountBackups on a cron schedule and prunes old ones.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::core::Rule;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DatabasesSpec, default_ttl};
use crate::duration::GoDuration;

/// Back up an account on a schedule (daily by default) and keep the last few backups.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rewind.dev",
    version = "v1alpha1",
    kind = "BackupSchedule",
    plural = "backupschedules",
    shortname = "bs",
    category = "rewind",
    status = "BackupScheduleStatus",
    doc = "Creates AccountBackups of one account on a cron schedule and deletes the oldest beyond the retention.",
    printcolumn(name = "Account", type_ = "string", json_path = ".spec.account"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Suspend", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(
        name = "Last-Backup",
        type_ = "date",
        json_path = ".status.lastScheduleTime"
    ),
    printcolumn(
        name = "Last-Success",
        type_ = "string",
        json_path = ".status.lastSuccessfulBackup"
    ),
    printcolumn(
        name = "Next",
        type_ = "string",
        json_path = ".status.nextScheduleTime"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleSpec {
    /// The account to back up (namespaces labelled `rewind.dev/account=<account>`). Cannot change.
    #[x_kube(
        validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(self) <= 63").message("account must be a valid label value: lower-case letters, digits and '-', at most 63 characters"),
        validation = Rule::new("self == oldSelf").message("a schedule's account cannot change: create a schedule for the other account instead")
    )]
    pub account: String,
    /// When to take a backup, in cron syntax (5 fields, or @daily, @hourly, @weekly, @monthly). Default `0 3 * * *`.
    /// `@daily-spread` / `@hourly-spread` place the account on a stable minute of the day / hour.
    /// Checked at admission field by field (numbers within each field's range, `*`, ranges, steps, lists,
    /// no reversed range such as `5-1`); what admission cannot see (a date that never comes such as
    /// `0 0 30 2 *`) is reported in the `Ready` condition.
    #[serde(default = "default_schedule")]
    #[schemars(length(max = 200))]
    #[x_kube(validation = cron_rule(), validation = cron_range_rule())]
    pub schedule: String,
    /// IANA time zone the schedule is read in, e.g. `Europe/Berlin`. Default UTC.
    /// Checked at admission against the operator's bundled time zone database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = time_zone_rule())]
    pub time_zone: Option<String>,
    /// Stop creating backups; existing ones are kept and still pruned.
    #[serde(default)]
    pub suspend: bool,
    /// A slot missed by more than this many seconds (operator down) is skipped rather than run late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub starting_deadline_seconds: Option<i64>,
    /// Which backups to keep.
    #[serde(default)]
    pub retention: RetentionSpec,
    /// The spec of each AccountBackup created, except `account`.
    #[serde(default)]
    pub template: AccountBackupTemplate,
}

/// A cron field: comma-separated items of `*`, a number or a range `a-b`, each with an optional step `/n`.
fn cron_field(number: &str) -> String {
    let item = format!("([*]|{number}(-{number})?)(/[1-9][0-9]?)?");
    format!("{item}(,{item})*")
}

/// The admission rule of `schedule`: an @-form, or five fields with numbers in each field's range.
pub fn cron_rule() -> Rule {
    let minute = cron_field("[0-5]?[0-9]");
    let hour = cron_field("([01]?[0-9]|2[0-3])");
    let day = cron_field("(0?[1-9]|[12][0-9]|3[01])");
    let month = cron_field("(0?[1-9]|1[0-2])");
    let weekday = cron_field("[0-7]");
    let regex = format!(
        "^(@(yearly|annually|monthly|weekly|daily|midnight|hourly|daily-spread|hourly-spread)|{minute} +{hour} +{day} +{month} +{weekday})$"
    );
    Rule::new(format!("self.matches('{regex}')")).message(
        "schedule must be 5 cron fields (minute 0-59, hour 0-23, day of month 1-31, month 1-12, day of week 0-7) \
         of numbers, '*', ranges a-b, steps /n and lists, e.g. '0 3 * * *', or one of @yearly, @monthly, @weekly, \
         @daily, @hourly, @daily-spread, @hourly-spread",
    )
}

/// The admission rule against reversed ranges (`5-1`): each `a-b` in the schedule has a <= b.
/// Only digits are matched, so `int()` never fails; the form itself is [`cron_rule`]'s.
pub fn cron_range_rule() -> Rule {
    Rule::new(
        "self.findAll('[0-9]{1,2}-[0-9]{1,2}').all(r, int(r.split('-')[0]) <= int(r.split('-')[1]))",
    )
    .message("schedule has a reversed range: write a-b with a <= b (e.g. 1-5, not 5-1)")
}

/// The admission rule of `timeZone`: a name of the operator's bundled time zone database.
pub fn time_zone_rule() -> Rule {
    let mut names: Vec<String> = jiff::tz::TimeZoneDatabase::bundled()
        .available()
        .map(|name| name.as_str().to_string())
        .collect();
    names.sort();
    names.dedup();
    let list = names
        .iter()
        .map(|name| format!("'{name}'"))
        .collect::<Vec<_>>()
        .join(",");
    Rule::new(format!("self in [{list}]")).message(
        "timeZone must be an IANA time zone name such as Europe/Berlin, America/New_York or UTC",
    )
}

/// `0 3 * * *`: every day at 03:00.
pub fn default_schedule() -> String {
    "0 3 * * *".to_string()
}

fn default_keep_last() -> u32 {
    7
}

/// Which backups a schedule keeps; the newest successful backup is always kept.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Keep this many of the newest backups. Default 7.
    #[serde(default = "default_keep_last")]
    #[schemars(range(min = 1))]
    pub keep_last: u32,
    /// Delete backups older than this Go duration (e.g. `720h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$')").message("maxAge must be a duration such as 720h or 90m"))]
    pub max_age: Option<GoDuration>,
}

impl Default for RetentionSpec {
    fn default() -> Self {
        Self {
            keep_last: default_keep_last(),
            max_age: None,
        }
    }
}

/// The AccountBackup spec without `account`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountBackupTemplate {
    /// A name for people. At most 253 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub display_name: Option<String>,
    /// Free text shown with every backup created. At most 1024 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub notes: Option<String>,
    /// How long each backup stays restorable. Default `168h`.
    #[serde(default = "default_ttl")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$')").message("ttl must be a duration such as 168h, 36h30m or 90m"))]
    pub ttl: GoDuration,
    /// The VolumeSnapshotClass for every PVC; default: the driver's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
    /// Database dumps over pod exec.
    #[serde(default)]
    pub databases: DatabasesSpec,
    /// What happens to volume data besides the CSI snapshot (copied into the repository by default).
    #[serde(default)]
    pub volumes: super::VolumesSpec,
    /// Selects additional resource-token Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_selector: Option<LabelSelector>,
}

impl Default for AccountBackupTemplate {
    fn default() -> Self {
        Self {
            display_name: None,
            notes: None,
            ttl: default_ttl(),
            volume_snapshot_class_name: None,
            databases: DatabasesSpec::default(),
            volumes: super::VolumesSpec::default(),
            token_selector: None,
        }
    }
}

/// Status of a BackupSchedule, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The slot of the most recent backup created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// The next slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// The newest backup of this schedule that Completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<String>,
    /// Backups of this schedule still Queued or Running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<String>,
    /// Standard conditions; `Ready` is False when the schedule cannot run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_knows_the_zones_the_schedule_controller_knows() {
        let rule = time_zone_rule().rule;
        for zone in [
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "Australia/Lord_Howe",
        ] {
            assert!(rule.contains(&format!("'{zone}'")), "{zone}");
            assert!(
                crate::schedule::cron::time_zone(Some(zone)).is_ok(),
                "{zone}"
            );
        }
        assert!(!rule.contains("'Mars/Olympus'"));
    }
}
