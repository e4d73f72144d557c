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

/// One parsed field: its allowed values and whether it was written as a bare
/// `*` or `?` (which matters for the day-of-month / day-of-week rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedField {
    pub values: BitSet,
    pub unrestricted: bool,
}

/// Parse one field's text: a comma-separated list of `*`, `?`, `N`, `NAME`,
/// `A-B`, each optionally followed by `/STEP`.
pub fn parse_field(field: Field, text: &str) -> Result<ParsedField, ScheduleError> {
    let err = |message: String| ScheduleError::Field { field, message };
    let (min, max) = field.bounds();
    let offset = if field == Field::Year { MIN_YEAR } else { 0 };
    let mut values = BitSet::default();
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
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u16 = step.parse().map_err(|_| {
                    if !step.is_empty() && step.bytes().all(|b| b.is_ascii_digit()) {
                        err(format!(
                            "step {step} is larger than the field's range {min}-{max}"
                        ))
                    } else {
                        err(format!("step '{step}' is not a positive number"))
                    }
                })?;
                if step == 0 {
                    return Err(err("step must be at least 1".into()));
                }
                // A step past the field's span can only ever hit its start.
                let span = max - min + 1;
                if step > span {
                    return Err(err(format!(
                        "step {step} is larger than the field's range {min}-{max}"
                    )));
                }
                (range, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (parse_value(field, a)?, parse_value(field, b)?);
            if a > b {
                return Err(err(format!(
                    "range {range} runs backwards (start {a} is after end {b})"
                )));
            }
            (a, b)
        } else {
            let start = parse_value(field, range)?;
            // `5/15` means "from 5 to the end, every 15"; a lone value is itself.
            if part.contains('/') {
                (start, max)
            } else {
                (start, start)
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
    })
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
