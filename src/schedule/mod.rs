//! Cron schedules: parsing and the next-fire computation.
//!
//! Accepted forms (see docs/DESIGN.md, "Cron expressions"):
//! - 5 fields `min hour dom mon dow` (classic crontab, fires at second 0),
//! - 6 fields `sec min hour dom mon dow`,
//! - 7 fields `sec min hour dom mon dow year` (the old system's form),
//! - `@yearly @annually @monthly @weekly @daily @midnight @hourly`,
//! - `@every <duration>` such as `@every 90s` or `@every 1h30m`;
//! - `@delay <duration>`: fixed delay, the next run starts that long after
//!   the previous one ended (the job actor drives it; see `actors::job`);
//! - the old system's month-relative day forms: `L`, `L-3`, `15W`, `LW` in
//!   day of month, `5L` / `FRIL` and `5#3` / `FRI#3` in day of week;
//! - `H`, `H/15`, `H(0-29)` in any field: a value derived from a stable hash
//!   of the job's name, so jobs written `H * * * *` spread over the hour.
//!
//! Semantics that differ from the `cron` crate, and why we do not wrap it:
//! day of week 0-7 with 0 and 7 both Sunday; when day-of-month and day-of-week
//! are both restricted a day matches if *either* does (classic cron); 5 fields
//! are accepted. Wall-clock times are read in the job's IANA time zone. Across
//! a daylight-saving change no wall-clock time fires twice (a repeated hour
//! fires at its first occurrence only), and a matching time that does not exist
//! fires once, at the first instant after the gap.
//!
//! `@every` intervals are anchored at the Unix epoch, not at the time a worker
//! started: every worker computes the same instants, which is what lets a tick
//! be claimed cluster-wide by `(job, instant)`.
//!
//! The next fire is a pure function of `(schedule, after)`: nothing here reads
//! the clock.

mod fields;

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

pub use fields::Field;
pub use fields::HashSeed;
use fields::{BitSet, MIN_YEAR, ParsedField, parse_field};

/// Why an expression or a time zone was rejected. The text names the part of
/// the expression at fault; callers prefix the job field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("expression is empty")]
    Empty,
    #[error(
        "expected 5 fields (min hour dom mon dow), 6 (sec first) or 7 (sec first, year last), found {0}"
    )]
    FieldCount(usize),
    #[error("{} field: {message}", field.label())]
    Field { field: Field, message: String },
    #[error(
        "unknown macro '{0}' (known: @yearly @annually @monthly @weekly @daily @midnight @hourly @every @delay)"
    )]
    UnknownMacro(String),
    #[error("@every: {0}")]
    Every(String),
    #[error("@delay: {0}")]
    Delay(String),
    #[error("unknown time zone '{0}' (use an IANA name such as Europe/Berlin or UTC)")]
    TimeZone(String),
    #[error("the expression never fires (no calendar date matches it)")]
    NeverFires,
}

/// A parsed schedule in a time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    kind: Kind,
    tz: Tz,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Calendar(Box<Calendar>),
    /// A fixed interval in milliseconds, anchored at the Unix epoch.
    Every(i64),
    /// Fixed delay: the next run starts this many milliseconds after the
    /// previous one ended. There is no fire time without the run's end.
    Delay(i64),
}

/// The allowed values of each calendar field.
#[derive(Debug, Clone, PartialEq)]
struct Calendar {
    seconds: BitSet,
    minutes: BitSet,
    hours: BitSet,
    days_of_month: ParsedField,
    months: BitSet,
    days_of_week: ParsedField,
    /// Years offset by [`MIN_YEAR`]; `None` when the field is absent or `*`.
    years: Option<BitSet>,
}

/// How far past the starting year the search goes when no year field bounds
/// it: every field pattern without a year repeats within 40 years (the
/// longest gap between two 29 Februaries on the same weekday, as `1#5` in
/// February needs, across a century year), so 50 years is past any match.
const SEARCH_YEARS_WITHOUT_YEAR_FIELD: i32 = 50;

/// Parse an IANA time zone name (`UTC`, `Europe/Berlin`).
pub fn parse_time_zone(name: &str) -> Result<Tz, ScheduleError> {
    name.parse::<Tz>()
        .map_err(|_| ScheduleError::TimeZone(name.to_string()))
}

impl Schedule {
    /// Parse `expr` for the time zone `tz`. Rejects expressions that can
    /// never fire on any calendar date, and `H` (which needs a job name:
    /// [`Schedule::parse_for_job`]).
    pub fn parse(expr: &str, tz: Tz) -> Result<Schedule, ScheduleError> {
        Schedule::parse_seeded(expr, tz, HashSeed(None))
    }

    /// Parse the schedule of the job `name`: `H` takes values derived from
    /// the name.
    pub fn parse_for_job(expr: &str, tz: Tz, name: &str) -> Result<Schedule, ScheduleError> {
        Schedule::parse_seeded(expr, tz, HashSeed(Some(name)))
    }

    fn parse_seeded(expr: &str, tz: Tz, seed: HashSeed) -> Result<Schedule, ScheduleError> {
        let expr = expr.trim();
        if expr.is_empty() {
            return Err(ScheduleError::Empty);
        }
        let kind = if let Some(rest) = expr.strip_prefix("@every") {
            if !rest.starts_with(char::is_whitespace) {
                return Err(ScheduleError::UnknownMacro(expr.to_string()));
            }
            Kind::Every(
                parse_duration_ms(rest.trim(), "@every 90s or @every 1h30m")
                    .map_err(ScheduleError::Every)?,
            )
        } else if let Some(rest) = expr.strip_prefix("@delay") {
            if !rest.starts_with(char::is_whitespace) {
                return Err(ScheduleError::UnknownMacro(expr.to_string()));
            }
            Kind::Delay(
                parse_duration_ms(rest.trim(), "@delay 30s or @delay 5m")
                    .map_err(ScheduleError::Delay)?,
            )
        } else if expr.starts_with('@') {
            let fields = match expr.to_ascii_lowercase().as_str() {
                "@yearly" | "@annually" => "0 0 0 1 1 *",
                "@monthly" => "0 0 0 1 * *",
                "@weekly" => "0 0 0 * * 0",
                "@daily" | "@midnight" => "0 0 0 * * *",
                "@hourly" => "0 0 * * * *",
                _ => return Err(ScheduleError::UnknownMacro(expr.to_string())),
            };
            Kind::Calendar(Box::new(Calendar::parse(fields, seed)?))
        } else {
            Kind::Calendar(Box::new(Calendar::parse(expr, seed)?))
        };
        if let Kind::Calendar(calendar) = &kind {
            let start_year = calendar
                .years
                .and_then(|y| y.next_from(0))
                .map_or(MIN_YEAR as i32, |y| (y + MIN_YEAR) as i32);
            let start = NaiveDate::from_ymd_opt(start_year, 1, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .expect("1 January of a year in range is a valid date");
            if calendar.next_match(start).is_none() {
                return Err(ScheduleError::NeverFires);
            }
        }
        Ok(Schedule { kind, tz })
    }

    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The first fire instant strictly after `after`, or `None` when the
    /// schedule has no more fire times (its year field is exhausted) or
    /// its fire times depend on the runs (`@delay`).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Every(every_ms) => {
                let next = (after.timestamp_millis().div_euclid(*every_ms) + 1) * every_ms;
                DateTime::from_timestamp_millis(next)
            }
            Kind::Calendar(calendar) => self.next_calendar_fire(calendar, after),
            Kind::Delay(_) => None,
        }
    }

    /// For `@delay`: the pause between one run's end and the next start.
    pub fn fixed_delay(&self) -> Option<Duration> {
        match self.kind {
            Kind::Delay(ms) => Some(Duration::from_millis(ms as u64)),
            _ => None,
        }
    }

    /// One line for people when the fire times cannot be listed in advance.
    pub fn explain(&self) -> Option<String> {
        self.fixed_delay().map(|delay| {
            format!(
                "fixed delay: each run starts {} after the previous run ends, so the next time depends on the run",
                humanize(delay)
            )
        })
    }

    /// The next `count` fire instants after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(count);
        let mut cursor = after;
        while out.len() < count {
            match self.next_after(cursor) {
                Some(next) => {
                    out.push(next);
                    cursor = next;
                }
                None => break,
            }
        }
        out
    }

    fn next_calendar_fire(
        &self,
        calendar: &Calendar,
        after: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        // Calendar schedules have whole-second resolution: start at the first
        // whole second after `after`.
        let first = DateTime::from_timestamp(after.timestamp() + 1, 0)?;
        if self.tz == Tz::UTC {
            return calendar
                .next_match(first.naive_utc())
                .map(|naive| naive.and_utc());
        }
        let mut from = first.with_timezone(&self.tz).naive_local();
        loop {
            let wall = calendar.next_match(from)?;
            let instant = match self.tz.from_local_datetime(&wall) {
                chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
                // A repeated wall-clock time fires at its first occurrence only.
                chrono::LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
                chrono::LocalResult::None => first_instant_after_gap(self.tz, wall),
            };
            if instant > after {
                return Some(instant);
            }
            from = wall + chrono::Duration::seconds(1);
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Every(ms) => write!(f, "@every {}ms in {}", ms, self.tz),
            Kind::Calendar(_) => write!(f, "calendar schedule in {}", self.tz),
            Kind::Delay(ms) => write!(f, "@delay {}ms", ms),
        }
    }
}

/// The first real instant after a daylight-saving gap that swallowed `wall`.
fn first_instant_after_gap(tz: Tz, wall: NaiveDateTime) -> DateTime<Utc> {
    // Walk forward 15 minutes at a time to the first wall time that exists,
    // then binary-search the second of the transition just before it (any
    // gap length works; a step this size keeps a 1-hour gap to 4 probes).
    const STEP_SECS: i64 = 15 * 60;
    let mut probe = wall;
    let existing = loop {
        probe += chrono::Duration::seconds(STEP_SECS);
        if let Some(t) = tz.from_local_datetime(&probe).earliest() {
            break t.with_timezone(&Utc).timestamp();
        }
    };
    // The gap ends at most one step before `existing`.
    let (mut lo, mut hi) = (existing - STEP_SECS, existing);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let local = DateTime::from_timestamp(mid, 0)
            .expect("timestamp near a real date")
            .with_timezone(&tz)
            .naive_local();
        if local > wall {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    DateTime::from_timestamp(lo, 0).expect("timestamp near a real date")
}

/// Parse a duration such as `90s`, `1h30m`, `2d` (units `s`, `m`, `h`, `d`)
/// for `@every` and `@delay`; the error text quotes `example`.
fn parse_duration_ms(text: &str, example: &str) -> Result<i64, String> {
    let err = |message: &str| format!("'{text}': {message}");
    if text.is_empty() {
        return Err(format!("missing duration (for example {example})"));
    }
    if text.contains("ms") {
        return Err(err(
            "milliseconds are not supported; the smallest unit is s",
        ));
    }
    let mut total_ms: i64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit_ms: i64 = match c {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            _ => return Err(err("units are s, m, h and d, as in 1h30m")),
        };
        let n: i64 = digits
            .parse()
            .map_err(|_| err("each unit needs a number before it"))?;
        total_ms = n
            .checked_mul(unit_ms)
            .and_then(|v| v.checked_add(total_ms))
            .ok_or_else(|| err("too long"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(err("a number needs a unit (s, m, h or d)"));
    }
    if total_ms < 1_000 {
        return Err(err("must be at least 1s"));
    }
    if Duration::from_millis(total_ms as u64) > Duration::from_secs(366 * 86_400) {
        return Err(err("must be at most 366d"));
    }
    Ok(total_ms)
}

/// `90s`, `5m`, `1h30m` for a whole number of seconds.
fn humanize(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    let parts = [(d, "d"), (h, "h"), (m, "m"), (s, "s")];
    let text: String = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if text.is_empty() { "0s".into() } else { text }
}

impl Calendar {
    fn parse(expr: &str, seed: HashSeed) -> Result<Calendar, ScheduleError> {
        let parts: Vec<&str> = expr.split_whitespace().collect();
        let texts: [&str; 7] = match parts.len() {
            5 => ["0", parts[0], parts[1], parts[2], parts[3], parts[4], "*"],
            6 => [
                parts[0], parts[1], parts[2], parts[3], parts[4], parts[5], "*",
            ],
            7 => [
                parts[0], parts[1], parts[2], parts[3], parts[4], parts[5], parts[6],
            ],
            n => return Err(ScheduleError::FieldCount(n)),
        };
        let field = |f, text| parse_field(f, text, seed);
        let years = field(Field::Year, texts[6])?;
        Ok(Calendar {
            seconds: field(Field::Second, texts[0])?.values,
            minutes: field(Field::Minute, texts[1])?.values,
            hours: field(Field::Hour, texts[2])?.values,
            days_of_month: field(Field::DayOfMonth, texts[3])?,
            months: field(Field::Month, texts[4])?.values,
            days_of_week: field(Field::DayOfWeek, texts[5])?,
            years: (!years.unrestricted).then_some(years.values),
        })
    }

    /// Classic cron: when both day fields are restricted, either may match;
    /// when one is `*` or `?`, the other alone decides. `days` and `first`
    /// (the month's length and the weekday of its 1st) serve the
    /// month-relative forms (`L`, `W`, `#`).
    fn day_matches(&self, day: u32, weekday: u32, days: u32, first: u32) -> bool {
        let (dom_field, dow_field) = (&self.days_of_month, &self.days_of_week);
        let dom = dom_field.values.contains(day as u16)
            || (!dom_field.specials.is_empty()
                && dom_field.specials.matches(day, weekday, days, first));
        let dow = dow_field.values.contains(weekday as u16)
            || (!dow_field.specials.is_empty()
                && dow_field.specials.matches(day, weekday, days, first));
        if self.days_of_month.unrestricted || self.days_of_week.unrestricted {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first wall-clock time `>= from` whose fields all match, searching
    /// field by field from the year down and carrying into the next larger
    /// unit when a field has no value left.
    fn next_match(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let (mut year, mut month, mut day) = (from.year(), from.month(), from.day());
        let (mut hour, mut minute, mut second) = (from.hour(), from.minute(), from.second());
        let year_limit = match self.years {
            Some(_) => fields::MAX_YEAR as i32,
            None => from.year() + SEARCH_YEARS_WITHOUT_YEAR_FIELD,
        };

        'search: loop {
            if year > year_limit {
                return None;
            }
            if let Some(years) = &self.years {
                let wanted = years.next_from((year - MIN_YEAR as i32).max(0) as u16)? as i32
                    + MIN_YEAR as i32;
                if wanted != year {
                    (year, month, day, hour, minute, second) = (wanted, 1, 1, 0, 0, 0);
                }
            }

            match self.months.next_from(month as u16) {
                None => {
                    (year, month, day, hour, minute, second) = (year + 1, 1, 1, 0, 0, 0);
                    continue 'search;
                }
                Some(m) if m as u32 != month => {
                    (month, day, hour, minute, second) = (m as u32, 1, 0, 0, 0);
                }
                Some(_) => {}
            }

            let first_of_month = NaiveDate::from_ymd_opt(year, month, 1)?;
            let weekday_of_first = first_of_month.weekday().num_days_from_sunday();
            let days_in_month = days_in_month(year, month);
            let Some(matching_day) = (day..=days_in_month).find(|d| {
                let weekday = (weekday_of_first + d - 1) % 7;
                self.day_matches(*d, weekday, days_in_month, weekday_of_first)
            }) else {
                (month, day, hour, minute, second) = (month + 1, 1, 0, 0, 0);
                continue 'search;
            };
            if matching_day != day {
                (day, hour, minute, second) = (matching_day, 0, 0, 0);
            }

            match self.hours.next_from(hour as u16) {
                None => {
                    (day, hour, minute, second) = (day + 1, 0, 0, 0);
                    continue 'search;
                }
                Some(h) if h as u32 != hour => (hour, minute, second) = (h as u32, 0, 0),
                Some(_) => {}
            }

            match self.minutes.next_from(minute as u16) {
                None => {
                    (hour, minute, second) = (hour + 1, 0, 0);
                    continue 'search;
                }
                Some(m) if m as u32 != minute => (minute, second) = (m as u32, 0),
                Some(_) => {}
            }

            match self.seconds.next_from(second as u16) {
                None => {
                    (minute, second) = (minute + 1, 0);
                    continue 'search;
                }
                Some(s) => second = s as u32,
            }

            return NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(hour, minute, second);
        }
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if NaiveDate::from_ymd_opt(year, 2, 29).is_some() => 29,
        2 => 28,
        _ => 31,
    }
}

#[cfg(test)]
mod tests;
