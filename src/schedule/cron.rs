//! Cron expressions (5 fields and the @-forms) and their slots in an IANA time zone, as pure functions.
//!
//! Slots are civil times in the zone. A civil time that does not exist (the
//! spring-forward gap) runs once at the instant the clock jumps to, shifted by
//! the gap (02:30 → 03:30 in Europe/Berlin); a civil time that exists twice
//! (fall-back) runs once, at its first occurrence. Two civil slots mapping to
//! one instant are one slot.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// How far forwards or backwards a slot is searched (covers 29 February in non-leap centuries).
const SEARCH_DAYS: i64 = 366 * 9;

/// Why an expression or a zone is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// Not 5 fields and not a known @-form.
    #[error(
        "expected 5 fields (minute hour day-of-month month day-of-week) or @yearly, @monthly, @weekly, @daily, @hourly, @daily-spread, @hourly-spread; got {0:?}"
    )]
    Shape(String),
    /// One field does not parse or is out of range.
    #[error("{field} field {value:?}: {reason}")]
    Field {
        /// Which field.
        field: &'static str,
        /// Its text.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The expression can never match (e.g. `0 0 31 2 *`).
    #[error("the schedule never matches a date")]
    Never,
    /// The time zone is not in the time zone database.
    #[error("unknown time zone {0:?}: use an IANA name such as Europe/Berlin or UTC")]
    TimeZone(String),
}

impl CronError {
    /// A static label for metrics and condition reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Shape(_) | Self::Field { .. } | Self::Never => "InvalidSchedule",
            Self::TimeZone(_) => "InvalidTimeZone",
        }
    }
}

/// A parsed 5-field cron expression: one bit per allowed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Whether day-of-month was restricted (not `*`).
    days_restricted: bool,
    /// Whether day-of-week was restricted (not `*`).
    weekdays_restricted: bool,
}

/// FNV-1a, 64 bit: a hash that is the same in every version and on every machine.
pub fn fnv1a(input: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in input.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Replaces the spread forms by a fixed minute derived from `account`; other expressions pass through.
///
/// `@daily-spread` → one minute of the day (00:00–23:59), `@hourly-spread` → one minute of the hour.
pub fn expand_spread(expression: &str, account: &str) -> String {
    let hash = fnv1a(account);
    match expression.trim() {
        "@daily-spread" => {
            let minute_of_day = hash % 1440;
            format!("{} {} * * *", minute_of_day % 60, minute_of_day / 60)
        }
        "@hourly-spread" => format!("{} * * * *", hash % 60),
        other => other.to_string(),
    }
}

fn parse_field(
    field: &'static str,
    text: &str,
    min: u32,
    max: u32,
) -> Result<(u64, bool), CronError> {
    let err = |reason: String| CronError::Field {
        field,
        value: text.to_string(),
        reason,
    };
    let number = |s: &str| -> Result<u32, CronError> {
        let n: u32 = s
            .parse()
            .map_err(|_| err(format!("{s:?} is not a number")))?;
        if n < min || n > max {
            return Err(err(format!("{n} is outside {min}-{max}")));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| err(format!("step {step:?} is not a number")))?;
                if step == 0 {
                    return Err(err("a step of 0".into()));
                }
                (range, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((lo, hi)) = range.split_once('-') {
            let (lo, hi) = (number(lo)?, number(hi)?);
            if lo > hi {
                return Err(err(format!("range {lo}-{hi} runs backwards")));
            }
            (lo, hi)
        } else {
            let n = number(range)?;
            // `5/15` means 5, 20, 35, 50 as in Vixie cron.
            if part.contains('/') { (n, max) } else { (n, n) }
        };
        let mut value = lo;
        while value <= hi {
            bits |= 1 << value;
            value += step;
        }
    }
    Ok((bits, text != "*" && !text.starts_with("*/")))
}

impl Cron {
    /// Parses 5 fields or an @-form (spread forms must be expanded first with [`expand_spread`]).
    pub fn parse(expression: &str) -> Result<Self, CronError> {
        let expression = expression.trim();
        let text = match expression {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(CronError::Shape(expression.to_string()));
        };
        let (minutes, _) = parse_field("minute", minute, 0, 59)?;
        let (hours, _) = parse_field("hour", hour, 0, 23)?;
        let (days, days_restricted) = parse_field("day-of-month", day, 1, 31)?;
        let (months, _) = parse_field("month", month, 1, 12)?;
        let (mut weekdays, weekdays_restricted) = parse_field("day-of-week", weekday, 0, 7)?;
        // 7 is Sunday too.
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        let cron = Self {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: (weekdays & 0x7f) as u8,
            days_restricted,
            weekdays_restricted,
        };
        if cron.never_matches() {
            return Err(CronError::Never);
        }
        Ok(cron)
    }

    /// True when the day-of-month/month combination can never occur (e.g. 30 February).
    fn never_matches(&self) -> bool {
        if self.weekdays_restricted && !self.days_restricted {
            return false;
        }
        if self.days_restricted && self.weekdays_restricted {
            return false;
        }
        // Longest length of each month (February: 29).
        const LONGEST: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        !(1..=12u32).any(|month| {
            self.months & (1 << month) != 0
                && (1..=LONGEST[month as usize - 1]).any(|day| self.days & (1 << day) != 0)
        })
    }

    /// Whether a civil date matches (Vixie semantics: day-of-month OR day-of-week when both are restricted).
    fn matches_date(&self, date: Date) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let day = self.days & (1 << date.day()) != 0;
        let weekday = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day || weekday,
            (true, false) => day,
            (false, true) => weekday,
            (false, false) => true,
        }
    }

    fn times(&self) -> impl DoubleEndedIterator<Item = (i8, i8)> + '_ {
        (0..24i8)
            .filter(|h| self.hours & (1 << h) != 0)
            .flat_map(move |h| {
                (0..60i8)
                    .filter(move |m| self.minutes & (1u64 << m) != 0)
                    .map(move |m| (h, m))
            })
    }

    fn resolve(date: Date, (hour, minute): (i8, i8), tz: &TimeZone) -> Option<Timestamp> {
        let civil: DateTime = date.at(hour, minute, 0, 0);
        // `compatible`: a gap moves forward by its length, a fold takes the earlier instant.
        tz.to_ambiguous_timestamp(civil).compatible().ok()
    }

    /// The first slot strictly after `after`.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let mut date = after.to_zoned(tz.clone()).date();
        for _ in 0..SEARCH_DAYS {
            if self.matches_date(date) {
                for time in self.times() {
                    if let Some(at) = Self::resolve(date, time, tz)
                        && at > after
                    {
                        return Some(at);
                    }
                }
            }
            date = date.checked_add(1.day()).ok()?;
        }
        None
    }

    /// The latest slot at or before `at`, not earlier than `not_before`.
    pub fn latest_at_or_before(
        &self,
        at: Timestamp,
        not_before: Timestamp,
        tz: &TimeZone,
    ) -> Option<Timestamp> {
        let mut date = at.to_zoned(tz.clone()).date();
        let first = not_before.to_zoned(tz.clone()).date().yesterday().ok()?;
        for _ in 0..SEARCH_DAYS {
            if date < first {
                return None;
            }
            if self.matches_date(date) {
                for time in self.times().rev() {
                    if let Some(slot) = Self::resolve(date, time, tz)
                        && slot <= at
                    {
                        return (slot >= not_before).then_some(slot);
                    }
                }
            }
            date = date.yesterday().ok()?;
        }
        None
    }
}

/// Looks up an IANA zone in the bundled database (`None`/empty: UTC) — the same database
/// admission checks names against, whatever the host's `/usr/share/zoneinfo` holds.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, CronError> {
    static BUNDLED: std::sync::LazyLock<jiff::tz::TimeZoneDatabase> =
        std::sync::LazyLock::new(jiff::tz::TimeZoneDatabase::bundled);
    match name.map(str::trim) {
        None | Some("") | Some("UTC") => Ok(TimeZone::UTC),
        Some(name) => BUNDLED
            .get(name)
            .map_err(|_| CronError::TimeZone(name.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn next(expr: &str, zone: &str, after: &str) -> String {
        let tz = time_zone(Some(zone)).expect("zone");
        Cron::parse(expr)
            .expect("cron")
            .next_after(ts(after), &tz)
            .expect("a slot")
            .to_string()
    }

    fn slots(expr: &str, zone: &str, from: &str, count: usize) -> Vec<String> {
        let tz = time_zone(Some(zone)).expect("zone");
        let cron = Cron::parse(expr).expect("cron");
        let mut at = ts(from);
        let mut out = Vec::new();
        for _ in 0..count {
            at = cron.next_after(at, &tz).expect("slot");
            out.push(at.to_string());
        }
        out
    }

    #[test]
    fn daily_at_three_in_utc() {
        assert_eq!(
            next("0 3 * * *", "UTC", "2026-05-01T03:00:00Z"),
            "2026-05-02T03:00:00Z"
        );
        assert_eq!(
            next("0 3 * * *", "UTC", "2026-05-01T02:59:59Z"),
            "2026-05-01T03:00:00Z"
        );
    }

    #[test]
    fn spring_forward_gap_slot_runs_once_shifted_by_the_gap() {
        // Europe/Berlin 2026-03-29: 02:00 CET → 03:00 CEST; 02:30 does not exist.
        let got = slots("30 2 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z", 3);
        assert_eq!(
            got,
            [
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-29T01:30:00Z", // 03:30 CEST: the gap, once
                "2026-03-30T00:30:00Z", // 02:30 CEST
            ]
        );
    }

    #[test]
    fn fall_back_repeated_hour_runs_once_at_the_first_occurrence() {
        // Europe/Berlin 2026-10-25: 03:00 CEST → 02:00 CET; 02:30 happens twice.
        let got = slots("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2);
        assert_eq!(got, ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]);
    }

    #[test]
    fn every_fifteen_minutes_across_new_york_spring_forward_has_no_duplicate_slot() {
        // America/New_York 2026-03-08: 02:00 EST → 03:00 EDT.
        let got = slots(
            "*/15 * * * *",
            "America/New_York",
            "2026-03-08T06:50:00Z",
            4,
        );
        // 01:45 EST (06:45Z) passed; 02:00..02:45 land on 03:00..03:45 EDT, shared with the real ones.
        assert_eq!(
            got,
            [
                "2026-03-08T07:00:00Z",
                "2026-03-08T07:15:00Z",
                "2026-03-08T07:30:00Z",
                "2026-03-08T07:45:00Z",
            ]
        );
    }

    #[test]
    fn new_york_fall_back_hourly_slot_is_not_repeated() {
        // America/New_York 2026-11-01: 02:00 EDT → 01:00 EST; 01:30 happens twice.
        let got = slots("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2);
        assert_eq!(got, ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]);
    }

    #[test]
    fn leap_day_schedule_waits_for_the_next_leap_year() {
        assert_eq!(
            next("0 3 29 2 *", "UTC", "2026-01-01T00:00:00Z"),
            "2028-02-29T03:00:00Z"
        );
    }

    #[test]
    fn the_thirty_first_skips_shorter_months() {
        let got = slots("0 3 31 * *", "UTC", "2026-01-31T04:00:00Z", 3);
        assert_eq!(
            got,
            [
                "2026-03-31T03:00:00Z",
                "2026-05-31T03:00:00Z",
                "2026-07-31T03:00:00Z",
            ]
        );
    }

    #[test]
    fn time_zone_shifts_the_instant() {
        assert_eq!(
            next("0 3 * * *", "Asia/Tokyo", "2026-06-01T00:00:00Z"),
            "2026-06-01T18:00:00Z"
        );
        assert_eq!(
            next("0 3 * * *", "Asia/Kolkata", "2026-06-01T00:00:00Z"),
            "2026-06-01T21:30:00Z"
        );
    }

    #[test]
    fn at_forms_expand_to_their_five_field_meaning() {
        assert_eq!(
            Cron::parse("@daily").expect("daily"),
            Cron::parse("0 0 * * *").expect("0 0")
        );
        assert_eq!(
            next("@weekly", "UTC", "2026-11-23T00:00:00Z"),
            "2026-11-29T00:00:00Z"
        );
        assert_eq!(
            next("@monthly", "UTC", "2026-11-23T00:00:00Z"),
            "2026-12-01T00:00:00Z"
        );
        assert_eq!(
            next("@yearly", "UTC", "2026-11-23T00:00:00Z"),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(
            next("@hourly", "UTC", "2026-11-23T00:00:00Z"),
            "2026-11-23T01:00:00Z"
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_restricted() {
        // 1st of the month OR Monday: 2026-06-01 is a Monday, then 2026-06-08.
        let got = slots("0 0 1 * 1", "UTC", "2026-05-31T00:00:00Z", 2);
        assert_eq!(got, ["2026-06-01T00:00:00Z", "2026-06-08T00:00:00Z"]);
        // Sunday as 7.
        assert_eq!(
            next("0 0 * * 7", "UTC", "2026-11-23T00:00:00Z"),
            "2026-11-29T00:00:00Z"
        );
    }

    #[test]
    fn malformed_expressions_are_rejected_with_the_field_named() {
        for bad in [
            "",
            "0 3 * *",
            "60 3 * * *",
            "0 24 * * *",
            "0 3 0 * *",
            "0 3 * 13 *",
            "0 3 * * 8",
            "*/0 * * * *",
            "5-1 * * * *",
            "a b c d e",
            "@sometimes",
        ] {
            assert!(Cron::parse(bad).is_err(), "{bad:?} must be rejected");
        }
        let err = Cron::parse("0 25 * * *").expect_err("hour 25");
        assert!(err.to_string().contains("hour"), "{err}");
        assert_eq!(Cron::parse("0 0 30 2 *"), Err(CronError::Never));
    }

    #[test]
    fn unknown_time_zones_are_rejected() {
        assert_eq!(
            time_zone(Some("Mars/Olympus"))
                .expect_err("unknown")
                .category(),
            "InvalidTimeZone"
        );
        assert!(time_zone(None).is_ok());
        assert!(time_zone(Some("Europe/Berlin")).is_ok());
    }

    #[test]
    fn latest_slot_is_found_backwards_and_bounded() {
        let cron = Cron::parse("0 3 * * *").expect("cron");
        let tz = TimeZone::UTC;
        assert_eq!(
            cron.latest_at_or_before(ts("2026-05-10T12:00:00Z"), ts("2026-01-01T00:00:00Z"), &tz),
            Some(ts("2026-05-10T03:00:00Z"))
        );
        assert_eq!(
            cron.latest_at_or_before(ts("2026-05-10T12:00:00Z"), ts("2026-05-10T04:00:00Z"), &tz),
            None
        );
    }

    #[test]
    fn spread_is_stable_per_account_and_spreads_accounts() {
        assert_eq!(
            expand_spread("@daily-spread", "acme"),
            expand_spread("@daily-spread", "acme")
        );
        // Pinned: the minute must not change between versions.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        let minutes: std::collections::HashSet<String> = (0..100)
            .map(|i| expand_spread("@daily-spread", &format!("account-{i}")))
            .collect();
        assert!(
            minutes.len() > 90,
            "only {} distinct minutes",
            minutes.len()
        );
        let hourly = expand_spread("@hourly-spread", "acme");
        assert!(Cron::parse(&hourly).is_ok(), "{hourly}");
        assert_eq!(expand_spread("0 3 * * *", "acme"), "0 3 * * *");
    }
}
