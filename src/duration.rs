//! Go-style durations (`168h`, `36h30m`, `1.5h`, `90s`) as used in specs, parsed without I/O.

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("{input:?} is not a duration: use a number and a unit (ms, s, m, h), e.g. 168h or 36h30m")]
pub struct DurationError {
    input: String,
}

/// Parses a Go duration made of `<number><unit>` parts; units ms, s, m, h.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let error = || DurationError {
        input: input.to_string(),
    };
    let mut rest = input.trim();
    if rest.is_empty() {
        return Err(error());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(error)?;
        if number_len == 0 {
            return Err(error());
        }
        let value: f64 = rest[..number_len].parse().map_err(|_| error())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(error()),
        };
        rest = &rest[unit_len..];
        total += value * seconds_per_unit;
    }
    if !total.is_finite() || total > 1e12 {
        return Err(error());
    }
    Ok(Duration::from_secs_f64(total))
}

/// A duration field of a spec (`ttl`, `maxAge`, `expireAfter`): the text as written, parsed
/// once when the object is read. Deserializing never fails on a bad value (one tenant's object
/// must not break the watch of every object): the parse error is kept and turned into a
/// condition by the controller that uses the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoDuration {
    text: String,
    parsed: Result<Duration, DurationError>,
}

impl GoDuration {
    /// The duration, or why the text is not one.
    pub fn get(&self) -> Result<Duration, DurationError> {
        self.parsed.clone()
    }

    /// The text as written in the spec.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl From<&str> for GoDuration {
    fn from(text: &str) -> Self {
        Self {
            text: text.to_string(),
            parsed: parse_duration(text),
        }
    }
}

impl PartialEq<&str> for GoDuration {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

impl std::fmt::Display for GoDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for GoDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(Self::from(text.as_str()))
    }
}

impl schemars::JsonSchema for GoDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "GoDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_duration("168h"), Ok(Duration::from_secs(168 * 3600)));
        assert_eq!(
            parse_duration("36h30m"),
            Ok(Duration::from_secs(36 * 3600 + 1800))
        );
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn malformed_durations_are_refused_with_an_example() {
        for bad in ["", "7d", "h", "10", "1x", "-5m"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.to_string().contains("e.g. 168h"), "{err}");
        }
    }

    #[test]
    fn a_spec_duration_keeps_its_text_and_a_bad_one_reads_without_failing() {
        let good: GoDuration = serde_json::from_value(serde_json::json!("36h30m")).expect("read");
        assert_eq!(good.get(), Ok(Duration::from_secs(36 * 3600 + 1800)));
        assert_eq!(serde_json::json!(good), "36h30m");
        let huge: GoDuration =
            serde_json::from_value(serde_json::json!("99999999999999999999h")).expect("read");
        assert!(
            huge.get().is_err(),
            "an overflowing duration is an error, not a panic"
        );
        assert_eq!(huge.as_str(), "99999999999999999999h");
    }
}
