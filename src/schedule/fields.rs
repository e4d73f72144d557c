//! Parsing of one cron expression into per-field bitsets.
//!
//! Every field becomes a set of allowed values; matching a calendar date is
//! then a handful of bit tests, which keeps next-fire computation cheap.

use super::ScheduleError;

/// The fields of a cron expression, in the order they are written in the
/// 7-field form (`sec min hour dom mon dow year`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Second,
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
    Year,
}

/// The first and last year a year field may name. Far enough either way for
/// any real schedule, small enough that a year set is a few machine words.
pub const MIN_YEAR: u16 = 1970;
pub const MAX_YEAR: u16 = 2199;

impl Field {
    pub fn label(self) -> &'static str {
        match self {
            Field::Second => "second",
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day-of-month",
            Field::Month => "month",
            Field::DayOfWeek => "day-of-week",
            Field::Year => "year",
        }
    }

    /// Inclusive bounds of the values a user may write (day of week allows 7
    /// for Sunday, folded to 0 after parsing).
    fn bounds(self) -> (u16, u16) {
        match self {
            Field::Second | Field::Minute => (0, 59),
            Field::Hour => (0, 23),
            Field::DayOfMonth => (1, 31),
            Field::Month => (1, 12),
            Field::DayOfWeek => (0, 7),
            Field::Year => (MIN_YEAR, MAX_YEAR),
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            Field::Month => &[
                "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
            ],
            Field::DayOfWeek => &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
            _ => &[],
        }
    }

    /// The value of a name in this field (`JAN` is 1, `SUN` is 0).
    fn value_of_name(self, word: &str) -> Option<u16> {
        let upper = word.to_ascii_uppercase();
        let index = self.names().iter().position(|n| *n == upper)? as u16;
        Some(if self == Field::Month {
            index + 1
        } else {
            index
        })
    }
}

/// A set of small integers (at most 256 values, offset by the field's minimum
/// for years).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BitSet([u64; 4]);

impl BitSet {
    pub fn insert(&mut self, v: u16) {
        self.0[(v / 64) as usize] |= 1 << (v % 64);
    }

    pub fn contains(&self, v: u16) -> bool {
        v < 256 && self.0[(v / 64) as usize] & (1 << (v % 64)) != 0
    }

    /// The smallest member that is `>= from`, if any.
    pub fn next_from(&self, from: u16) -> Option<u16> {
        let mut word = (from / 64) as usize;
        if word >= 4 {
            return None;
        }
        let mut bits = self.0[word] & (!0u64 << (from % 64));
        loop {
            if bits != 0 {
                return Some(word as u16 * 64 + bits.trailing_zeros() as u16);
            }
            word += 1;
            if word >= 4 {
                return None;
            }
            bits = self.0[word];
        }
    }
}

/// The month-relative forms of the two day fields. They depend on the month
/// (its length and the weekday of its 1st), so they are kept apart from the
/// plain value set and checked per day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DaySpecials {
    /// `L` (n = 0) and `L-n`: the day n days before the month's last.
    pub from_last: BitSet,
    /// `nW`: the weekday (Monday to Friday) nearest day n, within the month.
    pub nearest_weekday: BitSet,
    /// `LW`: the month's last weekday.
    pub last_weekday: bool,
    /// `dL`: bit d is set for "the last weekday d of the month" (0 Sunday).
    pub last_of: u8,
    /// `d#k`: bit `d * 5 + k - 1` is set for "the k-th weekday d".
    pub nth: u64,
}

impl DaySpecials {
    pub fn is_empty(&self) -> bool {
        *self == DaySpecials::default()
    }

    /// Whether `day` (1-based, falling on `weekday`, 0 Sunday) of a month of
    /// `days` days whose 1st falls on `first` matches one of these forms.
    pub fn matches(&self, day: u32, weekday: u32, days: u32, first: u32) -> bool {
        let weekday_of = |d: u32| (first + d - 1) % 7;
        if days >= day && self.from_last.contains((days - day) as u16) {
            return true;
        }
        if self.last_weekday && day == last_weekday(days, weekday_of(days)) {
            return true;
        }
        if self.last_of & (1 << weekday) != 0 && day + 7 > days {
            return true;
        }
        let week = (day - 1) / 7; // 0 for days 1-7, the first such weekday
        if self.nth & (1 << (weekday as u64 * 5 + week as u64)) != 0 {
            return true;
        }
        // `nW` for the n whose nearest weekday could be this day.
        [
            day,
            day.saturating_sub(1),
            day + 1,
            day.saturating_sub(2),
            day + 2,
        ]
        .into_iter()
        .filter(|n| (1..=days).contains(n) && self.nearest_weekday.contains(*n as u16))
        .any(|n| nearest_weekday(n, weekday_of(n), days) == day)
    }
}

/// The weekday nearest day `n` (which falls on `weekday`), without leaving
/// the month: a Saturday moves to Friday (or to Monday on the 1st), a Sunday
/// to Monday (or to Friday on the last day).
fn nearest_weekday(n: u32, weekday: u32, days: u32) -> u32 {
    match weekday {
        6 if n == 1 => 3,
        6 => n - 1,
        0 if n == days => n - 2,
        0 => n + 1,
        _ => n,
    }
}

/// The last Monday-to-Friday of a month of `days` days whose last day falls
/// on `weekday`.
fn last_weekday(days: u32, weekday: u32) -> u32 {
    match weekday {
        6 => days - 1,
        0 => days - 2,
        _ => days,
    }
}

/// One parsed field: its allowed values, whether it was written as a bare
/// `*` or `?` (which matters for the day-of-month / day-of-week rule), and
/// the day fields' month-relative forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedField {
    pub values: BitSet,
    pub unrestricted: bool,
    pub specials: DaySpecials,
}

/// What `H` hashes: the job's name. `None` where there is no job (then `H`
/// is an error that says to give a name).
#[derive(Debug, Clone, Copy)]
pub struct HashSeed<'a>(pub Option<&'a str>);

impl HashSeed<'_> {
    /// A stable 64-bit hash of the job name and the field (FNV-1a; fixed
    /// here, so the same on every worker and every version).
    fn for_field(self, field: Field) -> Option<u64> {
        let name = self.0?;
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in name.bytes().chain([0]).chain(field.label().bytes()) {
            hash ^= byte as u64;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        Some(hash)
    }
}

/// Parse one field's text: a comma-separated list of `*`, `?`, `N`, `NAME`,
/// `A-B`, each optionally followed by `/STEP`; `H`, `H(A-B)`, each with an
/// optional `/STEP`; and in the day fields `L`, `L-N`, `NW`, `LW` (day of
/// month), `DL`, `D#K` (day of week).
pub fn parse_field(field: Field, text: &str, seed: HashSeed) -> Result<ParsedField, ScheduleError> {
    let err = |message: String| ScheduleError::Field { field, message };
    let (min, max) = field.bounds();
    let offset = if field == Field::Year { MIN_YEAR } else { 0 };
    let mut values = BitSet::default();
    let mut specials = DaySpecials::default();
    let unrestricted = text == "*" || text == "?";
    if text == "?" && !matches!(field, Field::DayOfMonth | Field::DayOfWeek) {
        return Err(err(
            "'?' is only allowed in the day-of-month and day-of-week fields".into(),
        ));
    }

    for part in text.split(',') {
        if part.is_empty() {
            return Err(err(format!("empty list element in '{text}'")));
        }
        if parse_day_special(field, part, &mut specials)? {
            continue;
        }
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (range, Some(parse_step(field, step)?)),
            None => (part, None),
        };
        let (lo, hi, step) = if let Some(hashed) = range.strip_prefix('H') {
            hashed_range(field, part, hashed, step, seed)?
        } else if range == "*" || range == "?" {
            (min, max, step.unwrap_or(1))
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (parse_value(field, a)?, parse_value(field, b)?);
            if a > b {
                return Err(err(format!(
                    "range {range} runs backwards (start {a} is after end {b})"
                )));
            }
            (a, b, step.unwrap_or(1))
        } else {
            let start = parse_value(field, range)?;
            // `5/15` means "from 5 to the end, every 15"; a lone value is itself.
            match step {
                Some(step) => (start, max, step),
                None => (start, start, 1),
            }
        };
        let mut v = lo;
        while v <= hi {
            // Day of week 7 is Sunday, the same day as 0.
            let stored = if field == Field::DayOfWeek && v == 7 {
                0
            } else {
                v
            };
            values.insert(stored - offset);
            match v.checked_add(step) {
                Some(next) => v = next,
                None => break,
            }
        }
    }
    Ok(ParsedField {
        values,
        unrestricted,
        specials,
    })
}

/// A `/STEP`: at least 1, at most the field's span (a larger step could
/// only ever hit the start).
fn parse_step(field: Field, step: &str) -> Result<u16, ScheduleError> {
    let err = |message: String| ScheduleError::Field { field, message };
    let (min, max) = field.bounds();
    let too_large = || {
        err(format!(
            "step {step} is larger than the field's range {min}-{max}"
        ))
    };
    let value: u16 = step.parse().map_err(|_| {
        if !step.is_empty() && step.bytes().all(|b| b.is_ascii_digit()) {
            too_large()
        } else {
            err(format!("step '{step}' is not a positive number"))
        }
    })?;
    if value == 0 {
        return Err(err("step must be at least 1".into()));
    }
    if value > max - min + 1 {
        return Err(too_large());
    }
    Ok(value)
}

/// `H`, `H(A-B)`, with an optional step: the range the hashed values lie in.
/// Without a step, one value in the range; with a step S, every S-th value
/// from a hashed offset below S. Day of month hashes within 1-28 and day of
/// week within 0-6, so the value exists in every month and week.
fn hashed_range(
    field: Field,
    part: &str,
    after_h: &str,
    step: Option<u16>,
    seed: HashSeed,
) -> Result<(u16, u16, u16), ScheduleError> {
    let err = |message: String| ScheduleError::Field { field, message };
    let hash = seed.for_field(field).ok_or_else(|| {
        err(format!(
            "'{part}': H is derived from the job's name, and there is none here (distcron schedule --name NAME)"
        ))
    })?;
    let (lo, hi) = match after_h {
        "" => match field {
            Field::DayOfMonth => (1, 28),
            Field::DayOfWeek => (0, 6),
            _ => field.bounds(),
        },
        range => {
            let inner = range
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|r| r.split_once('-'))
                .ok_or_else(|| err(format!("'{part}' is not H, H(A-B), H/S or H(A-B)/S")))?;
            let (a, b) = (parse_value(field, inner.0)?, parse_value(field, inner.1)?);
            if a > b {
                return Err(err(format!("range {a}-{b} of '{part}' runs backwards")));
            }
            (a, b)
        }
    };
    let span = (hi - lo + 1) as u64;
    Ok(match step {
        None => {
            let v = lo + (hash % span) as u16;
            (v, v, 1)
        }
        Some(step) => (lo + (hash % step.min(hi - lo + 1) as u64) as u16, hi, step),
    })
}

/// The month-relative forms: `L`, `L-N`, `NW`, `LW` in day of month, `DL`,
/// `D#K` in day of week. `Ok(true)` when `part` was one (and is recorded).
fn parse_day_special(
    field: Field,
    part: &str,
    specials: &mut DaySpecials,
) -> Result<bool, ScheduleError> {
    let err = |message: String| ScheduleError::Field { field, message };
    let upper = part.to_ascii_uppercase();
    if upper.starts_with('H') {
        return Ok(false);
    }
    // The letters left once day and month names (WED, JUL...) are removed.
    let letters = field
        .names()
        .iter()
        .fold(upper.clone(), |text, name| text.replace(name, ""));
    let has = |c: char| letters.contains(c);
    if !(has('L') || has('W') || has('#')) {
        return Ok(false);
    }
    if upper.contains('/') {
        return Err(err(format!("'{part}': L, W and # cannot take a step")));
    }
    match field {
        Field::DayOfMonth => {
            if upper.contains('#') {
                return Err(err(format!(
                    "'{part}': '#' is only allowed in the day-of-week field"
                )));
            }
            if upper == "L" {
                specials.from_last.insert(0);
            } else if upper == "LW" {
                specials.last_weekday = true;
            } else if let Some(n) = upper.strip_prefix("L-") {
                let n: u16 = n
                    .parse()
                    .ok()
                    .filter(|n| (1..=30).contains(n))
                    .ok_or_else(|| {
                        err(format!(
                            "'{part}': the days before the last must be 1 to 30"
                        ))
                    })?;
                specials.from_last.insert(n);
            } else if let Some(day) = upper.strip_suffix('W') {
                let day = parse_value(field, day).map_err(|_| {
                    err(format!("'{part}': W takes one day of the month, as in 15W"))
                })?;
                specials.nearest_weekday.insert(day);
            } else {
                return Err(err(format!(
                    "'{part}' is not L, L-N, NW or LW (last day, N days before it, weekday nearest day N, last weekday)"
                )));
            }
        }
        Field::DayOfWeek => {
            if has('W') {
                return Err(err(format!(
                    "'{part}': 'W' is only allowed in the day-of-month field"
                )));
            }
            let weekday = |text: &str| parse_value(field, text).map(|d| if d == 7 { 0 } else { d });
            if let Some((day, nth)) = upper.split_once('#') {
                let day = weekday(day)?;
                let nth: u64 = nth
                    .parse()
                    .ok()
                    .filter(|n| (1..=5).contains(n))
                    .ok_or_else(|| err(format!("'{part}': the number after # must be 1 to 5")))?;
                specials.nth |= 1 << (day as u64 * 5 + nth - 1);
            } else if let Some(day) = upper.strip_suffix('L').filter(|d| !d.is_empty()) {
                specials.last_of |= 1 << weekday(day)?;
            } else {
                return Err(err(format!(
                    "'{part}' is not DL or D#K (the last weekday D of the month, the K-th weekday D)"
                )));
            }
        }
        _ => {
            let which = if has('W') {
                "W"
            } else if has('#') {
                "#"
            } else {
                "L"
            };
            return Err(err(format!(
                "'{part}': '{which}' is only allowed in the day fields (L: both, W: day of month, #: day of week)"
            )));
        }
    }
    Ok(true)
}

fn parse_value(field: Field, text: &str) -> Result<u16, ScheduleError> {
    let (min, max) = field.bounds();
    let err = |message: String| ScheduleError::Field { field, message };
    let value = match text.parse::<u16>() {
        Ok(v) => v,
        Err(_) => field.value_of_name(text).ok_or_else(|| {
            if field.names().is_empty() {
                err(format!("'{text}' is not a number"))
            } else {
                err(format!(
                    "'{text}' is neither a number nor one of {}",
                    field.names().join(" ")
                ))
            }
        })?,
    };
    if value < min || value > max {
        return Err(err(format!("{value} is out of range {min}-{max}")));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_field(field: Field, text: &str) -> Result<ParsedField, ScheduleError> {
        super::parse_field(field, text, HashSeed(Some("job")))
    }

    fn values(field: Field, text: &str) -> Vec<u16> {
        let parsed = parse_field(field, text).unwrap();
        (0..256).filter(|v| parsed.values.contains(*v)).collect()
    }

    #[test]
    fn lists_ranges_and_steps() {
        assert_eq!(
            values(Field::Minute, "1,5-7,*/20"),
            vec![0, 1, 5, 6, 7, 20, 40]
        );
        assert_eq!(values(Field::Hour, "8-18/5"), vec![8, 13, 18]);
        assert_eq!(values(Field::Second, "50/3"), vec![50, 53, 56, 59]);
    }

    #[test]
    fn day_of_week_seven_is_sunday_and_names_work() {
        assert_eq!(values(Field::DayOfWeek, "7"), vec![0]);
        assert_eq!(values(Field::DayOfWeek, "5-7"), vec![0, 5, 6]);
        assert_eq!(values(Field::DayOfWeek, "mon-FRI"), vec![1, 2, 3, 4, 5]);
        assert_eq!(values(Field::Month, "JAN,dec"), vec![1, 12]);
    }

    #[test]
    fn bitset_next_from_crosses_words() {
        let mut set = BitSet::default();
        set.insert(3);
        set.insert(200);
        assert_eq!(set.next_from(0), Some(3));
        assert_eq!(set.next_from(4), Some(200));
        assert_eq!(set.next_from(201), None);
    }

    #[test]
    fn bad_fields_name_the_problem() {
        let msg = |f, t| parse_field(f, t).unwrap_err().to_string();
        assert_eq!(
            msg(Field::DayOfMonth, "32"),
            "day-of-month field: 32 is out of range 1-31"
        );
        assert_eq!(
            msg(Field::Hour, "10-2"),
            "hour field: range 10-2 runs backwards (start 10 is after end 2)"
        );
        assert_eq!(
            msg(Field::Minute, "*/0"),
            "minute field: step must be at least 1"
        );
        assert!(msg(Field::Month, "FOO").contains("neither a number nor one of JAN"));
        assert!(msg(Field::Hour, "?").contains("only allowed in the day-of-month"));
        assert_eq!(
            msg(Field::Year, "1900"),
            "year field: 1900 is out of range 1970-2199"
        );
    }

    #[test]
    fn steps_past_the_range_are_errors_not_panics() {
        let msg = |f, t| parse_field(f, t).unwrap_err().to_string();
        assert_eq!(
            msg(Field::Year, "*/65000"),
            "year field: step 65000 is larger than the field's range 1970-2199"
        );
        assert_eq!(
            msg(Field::Second, "5/65535"),
            "second field: step 65535 is larger than the field's range 0-59"
        );
        assert_eq!(
            msg(Field::Second, "5/99999999"),
            "second field: step 99999999 is larger than the field's range 0-59"
        );
        assert!(
            parse_field(Field::Minute, "*/60").is_ok(),
            "a step of the whole span"
        );
    }

    const ALL: [Field; 7] = [
        Field::Second,
        Field::Minute,
        Field::Hour,
        Field::DayOfMonth,
        Field::Month,
        Field::DayOfWeek,
        Field::Year,
    ];

    proptest::proptest! {
        /// Any field, any start and step: an error naming the field, or
        /// values all inside the field's range. Never a panic.
        #[test]
        fn any_step_is_in_range_or_an_error(field in 0usize..7, start in 0u32..70_000, step in 0u32..70_000, star: bool) {
            let field = ALL[field];
            let text = if star { format!("*/{step}") } else { format!("{start}/{step}") };
            match parse_field(field, &text) {
                Ok(parsed) => {
                    let (min, max) = field.bounds();
                    let offset = if field == Field::Year { MIN_YEAR } else { 0 };
                    let mut v = 0;
                    while let Some(found) = parsed.values.next_from(v) {
                        proptest::prop_assert!(found + offset >= min && found + offset <= max, "{text}: {found}");
                        v = found + 1;
                    }
                }
                Err(e) => proptest::prop_assert!(e.to_string().starts_with(field.label()), "{e}"),
            }
        }
    }
}
