use super::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("bad test timestamp {s}: {e}"))
        .with_timezone(&Utc)
}

fn next_n(expr: &str, zone: &str, after: &str, n: usize) -> Vec<String> {
    let schedule = Schedule::parse(expr, parse_time_zone(zone).unwrap())
        .unwrap_or_else(|e| panic!("{expr}: {e}"));
    schedule
        .upcoming(utc(after), n)
        .iter()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .collect()
}

fn rejection(expr: &str) -> String {
    Schedule::parse(expr, Tz::UTC).unwrap_err().to_string()
}

// --- The three points where classic cron differs from the `cron` crate ---

#[test]
fn five_fields_are_classic_crontab_firing_at_second_zero() {
    assert_eq!(
        next_n("*/15 * * * *", "UTC", "2026-01-01T00:00:00Z", 3),
        [
            "2026-01-01T00:15:00Z",
            "2026-01-01T00:30:00Z",
            "2026-01-01T00:45:00Z"
        ]
    );
}

#[test]
fn day_of_week_one_is_monday_and_zero_and_seven_are_sunday() {
    // 2026-01-05 is a Monday, 2026-01-04 a Sunday.
    assert_eq!(
        next_n("0 0 * * 1", "UTC", "2026-01-01T00:00:00Z", 2),
        ["2026-01-05T00:00:00Z", "2026-01-12T00:00:00Z"]
    );
    for sunday in ["0", "7", "SUN", "sun"] {
        assert_eq!(
            next_n(
                &format!("0 0 * * {sunday}"),
                "UTC",
                "2026-01-01T00:00:00Z",
                1
            ),
            ["2026-01-04T00:00:00Z"],
            "day of week {sunday}"
        );
    }
}

#[test]
fn restricted_day_fields_match_if_either_matches() {
    // Fridays (2 and 9 January) and the 13th (a Tuesday).
    assert_eq!(
        next_n("0 0 13 * FRI", "UTC", "2026-01-01T00:00:00Z", 3),
        [
            "2026-01-02T00:00:00Z",
            "2026-01-09T00:00:00Z",
            "2026-01-13T00:00:00Z"
        ]
    );
}

#[test]
fn an_unrestricted_day_field_leaves_the_other_to_decide() {
    // `*` and `?` in day-of-month: only Mondays.
    for dom in ["*", "?"] {
        assert_eq!(
            next_n(
                &format!("0 0 0 {dom} * MON"),
                "UTC",
                "2026-01-01T00:00:00Z",
                2
            ),
            ["2026-01-05T00:00:00Z", "2026-01-12T00:00:00Z"]
        );
    }
    // `?` in day-of-week: only the 13th.
    assert_eq!(
        next_n("0 0 0 13 * ?", "UTC", "2026-01-01T00:00:00Z", 2),
        ["2026-01-13T00:00:00Z", "2026-02-13T00:00:00Z"]
    );
}

// --- Field forms ---

#[test]
fn six_fields_put_seconds_first() {
    assert_eq!(
        next_n("*/20 * * * * *", "UTC", "2026-01-01T00:00:00Z", 3),
        [
            "2026-01-01T00:00:20Z",
            "2026-01-01T00:00:40Z",
            "2026-01-01T00:01:00Z"
        ]
    );
}

#[test]
fn seven_fields_add_a_year_and_stop_when_it_is_over() {
    assert_eq!(
        next_n("*/5 * * * * * *", "UTC", "2026-01-01T00:00:00Z", 2),
        ["2026-01-01T00:00:05Z", "2026-01-01T00:00:10Z"]
    );
    assert_eq!(
        next_n("0 0 12 1 1 * 2027-2028", "UTC", "2026-06-01T00:00:00Z", 5),
        ["2027-01-01T12:00:00Z", "2028-01-01T12:00:00Z"]
    );
    assert_eq!(
        next_n("0 0 0 1 1 * 2030/10", "UTC", "2026-01-01T00:00:00Z", 2),
        ["2030-01-01T00:00:00Z", "2040-01-01T00:00:00Z"]
    );
}

#[test]
fn month_names_and_ranges() {
    assert_eq!(
        next_n("0 0 1 JAN,jul *", "UTC", "2026-02-01T00:00:00Z", 2),
        ["2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z"]
    );
    assert_eq!(
        next_n("30 9 * * MON-FRI", "UTC", "2026-01-02T10:00:00Z", 2),
        ["2026-01-05T09:30:00Z", "2026-01-06T09:30:00Z"]
    );
}

#[test]
fn twenty_ninth_of_february_fires_only_in_leap_years() {
    assert_eq!(
        next_n("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z", 2),
        ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]
    );
    // 2100 is not a leap year: 2096 is followed by 2104.
    assert_eq!(
        next_n("0 0 29 2 *", "UTC", "2096-03-01T00:00:00Z", 1),
        ["2104-02-29T00:00:00Z"]
    );
}

#[test]
fn day_31_skips_short_months() {
    assert_eq!(
        next_n("0 0 31 * *", "UTC", "2026-01-31T00:00:00Z", 3),
        [
            "2026-03-31T00:00:00Z",
            "2026-05-31T00:00:00Z",
            "2026-07-31T00:00:00Z"
        ]
    );
}

#[test]
fn macros_expand_to_their_crontab_meaning() {
    let after = "2026-03-15T10:20:30Z";
    assert_eq!(next_n("@hourly", "UTC", after, 1), ["2026-03-15T11:00:00Z"]);
    assert_eq!(next_n("@daily", "UTC", after, 1), ["2026-03-16T00:00:00Z"]);
    assert_eq!(
        next_n("@midnight", "UTC", after, 1),
        ["2026-03-16T00:00:00Z"]
    );
    assert_eq!(next_n("@weekly", "UTC", after, 1), ["2026-03-22T00:00:00Z"]);
    assert_eq!(
        next_n("@monthly", "UTC", after, 1),
        ["2026-04-01T00:00:00Z"]
    );
    assert_eq!(next_n("@yearly", "UTC", after, 1), ["2027-01-01T00:00:00Z"]);
    assert_eq!(
        next_n("@annually", "UTC", after, 1),
        ["2027-01-01T00:00:00Z"]
    );
}

#[test]
fn every_is_anchored_at_the_epoch_so_all_workers_agree() {
    assert_eq!(
        next_n("@every 90s", "UTC", "2026-01-01T00:00:00Z", 3),
        [
            "2026-01-01T00:01:30Z",
            "2026-01-01T00:03:00Z",
            "2026-01-01T00:04:30Z"
        ]
    );
    assert_eq!(
        next_n("@every 1h30m", "UTC", "2026-01-01T00:10:00Z", 2),
        ["2026-01-01T01:30:00Z", "2026-01-01T03:00:00Z"]
    );
    // A time zone does not move an interval.
    assert_eq!(
        next_n("@every 1h", "Europe/Berlin", "2026-03-29T00:30:00Z", 2),
        ["2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"]
    );
}

#[test]
fn next_fire_is_strictly_after_even_with_subsecond_input() {
    let schedule = Schedule::parse("* * * * * *", Tz::UTC).unwrap();
    let after = utc("2026-01-01T00:00:00.500Z");
    assert_eq!(
        schedule.next_after(after),
        Some(utc("2026-01-01T00:00:01Z"))
    );
    let exact = utc("2026-01-01T00:00:01Z");
    assert_eq!(
        schedule.next_after(exact),
        Some(utc("2026-01-01T00:00:02Z"))
    );
}

// --- Time zones and daylight saving ---

#[test]
fn berlin_spring_gap_fires_once_at_the_end_of_the_gap() {
    // 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00Z).
    assert_eq!(
        next_n("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 2),
        ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
    );
    // Every minute through the gap: the 60 missing minutes collapse to one
    // fire at 03:00 CEST, which is also the 03:00 tick itself.
    assert_eq!(
        next_n("* * * * *", "Europe/Berlin", "2026-03-29T00:58:00Z", 3),
        [
            "2026-03-29T00:59:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-29T01:01:00Z"
        ]
    );
}

#[test]
fn berlin_autumn_repeated_hour_fires_once() {
    // 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice,
    // at 00:30Z and 01:30Z. It fires at the first only.
    assert_eq!(
        next_n("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
        ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
    );
    // Hourly: 02:00 (first occurrence, 00:00Z), then 03:00 CET (02:00Z).
    assert_eq!(
        next_n("0 * * * *", "Europe/Berlin", "2026-10-24T23:30:00Z", 3),
        [
            "2026-10-25T00:00:00Z",
            "2026-10-25T02:00:00Z",
            "2026-10-25T03:00:00Z"
        ]
    );
}

#[test]
fn starting_inside_a_repeated_hour_does_not_fire_it_again() {
    // 01:45Z is 02:45 CET, inside the second occurrence of 02:xx.
    assert_eq!(
        next_n("50 2 * * *", "Europe/Berlin", "2026-10-25T01:45:00Z", 1),
        ["2026-10-26T01:50:00Z"]
    );
}

#[test]
fn new_york_transitions() {
    // 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00Z).
    assert_eq!(
        next_n("15 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 2),
        ["2026-03-08T07:00:00Z", "2026-03-09T06:15:00Z"]
    );
    // 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 fires at its
    // first occurrence (05:30Z), not again at 06:30Z.
    assert_eq!(
        next_n("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
        ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
    );
}

#[test]
fn sydney_transitions_in_the_southern_hemisphere() {
    // 2026-04-05: 03:00 AEDT falls back to 02:00 AEST; 02:30 first occurs at
    // 2026-04-04T15:30Z.
    assert_eq!(
        next_n("30 2 * * *", "Australia/Sydney", "2026-04-04T00:00:00Z", 2),
        ["2026-04-04T15:30:00Z", "2026-04-05T16:30:00Z"]
    );
    // 2026-10-04: 02:00 AEST jumps to 03:00 AEDT (2026-10-03T16:00Z).
    assert_eq!(
        next_n("30 2 * * *", "Australia/Sydney", "2026-10-03T00:00:00Z", 2),
        ["2026-10-03T16:00:00Z", "2026-10-04T15:30:00Z"]
    );
}

#[test]
fn a_time_zone_moves_wall_clock_schedules() {
    assert_eq!(
        next_n("0 9 * * *", "America/New_York", "2026-01-01T00:00:00Z", 1),
        ["2026-01-01T14:00:00Z"]
    );
}

// --- Rejections ---

#[test]
fn an_expression_that_never_fires_is_rejected() {
    assert_eq!(
        rejection("0 0 30 2 *"),
        "the expression never fires (no calendar date matches it)"
    );
    assert_eq!(
        rejection("0 0 0 31 4,6,9,11 *"),
        "the expression never fires (no calendar date matches it)"
    );
    // 2027 has no 29 February.
    assert_eq!(
        rejection("0 0 0 29 2 * 2027"),
        "the expression never fires (no calendar date matches it)"
    );
    // Restricting day of week as well makes it fire on that weekday.
    assert!(Schedule::parse("0 0 30 2 MON", Tz::UTC).is_ok());
}

#[test]
fn rejections_name_the_field_and_the_problem() {
    assert_eq!(rejection(""), "expression is empty");
    assert!(rejection("* * * *").starts_with("expected 5 fields"));
    assert!(rejection("* * * *").ends_with("found 4"));
    assert_eq!(
        rejection("60 * * * *"),
        "minute field: 60 is out of range 0-59"
    );
    assert_eq!(
        rejection("0 0 * * 8"),
        "day-of-week field: 8 is out of range 0-7"
    );
    assert_eq!(
        rejection("0 0 0 0 * *"),
        "day-of-month field: 0 is out of range 1-31"
    );
    assert_eq!(
        rejection("0 0 0 1 13 *"),
        "month field: 13 is out of range 1-12"
    );
    assert_eq!(
        rejection("* * * * * * 1969"),
        "year field: 1969 is out of range 1970-2199"
    );
    assert_eq!(
        rejection("0 ? * * *"),
        "hour field: '?' is only allowed in the day-of-month and day-of-week fields"
    );
    assert!(rejection("@fortnightly").starts_with("unknown macro '@fortnightly'"));
    assert_eq!(
        rejection("@every"),
        "unknown macro '@every' (known: @yearly @annually @monthly @weekly @daily @midnight @hourly @every @delay)"
    );
    assert_eq!(
        rejection("@every 500ms"),
        "@every: '500ms': milliseconds are not supported; the smallest unit is s"
    );
    assert_eq!(
        rejection("@every 90"),
        "@every: '90': a number needs a unit (s, m, h or d)"
    );
    assert_eq!(
        rejection("@every 10x"),
        "@every: '10x': units are s, m, h and d, as in 1h30m"
    );
    assert_eq!(rejection("@every 0s"), "@every: '0s': must be at least 1s");
    assert_eq!(
        rejection("@every h"),
        "@every: 'h': each unit needs a number before it"
    );
    assert_eq!(
        rejection("@every 400d"),
        "@every: '400d': must be at most 366d"
    );
}

#[test]
fn unknown_time_zones_are_rejected_by_name() {
    assert_eq!(
        parse_time_zone("Mars/Olympus").unwrap_err().to_string(),
        "unknown time zone 'Mars/Olympus' (use an IANA name such as Europe/Berlin or UTC)"
    );
    assert_eq!(
        parse_time_zone("Europe/Berlin").unwrap(),
        chrono_tz::Europe::Berlin
    );
}

#[test]
fn an_exhausted_year_field_has_no_next_fire() {
    let schedule = Schedule::parse("0 0 0 1 1 * 2027", Tz::UTC).unwrap();
    assert_eq!(schedule.next_after(utc("2027-06-01T00:00:00Z")), None);
    assert!(schedule.upcoming(utc("2027-06-01T00:00:00Z"), 5).is_empty());
}

/// Cross-check the search against brute force: step every second of a
/// day-spanning window and compare fire instants for a few expressions.
#[test]
fn search_agrees_with_brute_force_over_a_dst_day() {
    let zone = chrono_tz::Europe::Berlin;
    for expr in ["*/7 * * * * *", "0 */13 1-3 * * *", "15 30 2 * * *"] {
        let schedule = Schedule::parse(expr, zone).unwrap();
        let Kind::Calendar(calendar) = &schedule.kind else {
            unreachable!()
        };
        let start = utc("2026-03-28T23:00:00Z").timestamp();
        let end = utc("2026-03-29T03:00:00Z").timestamp();
        let mut expected = Vec::new();
        let mut last_wall: Option<NaiveDateTime> = None;
        for t in start + 1..end {
            let instant = DateTime::from_timestamp(t, 0).unwrap();
            let wall = instant.with_timezone(&zone).naive_local();
            // Matching wall times in the gap are represented by the first
            // instant after it.
            let gap_fire = last_wall.is_some_and(|prev| {
                wall - prev > chrono::Duration::seconds(1)
                    && (1..(wall - prev).num_seconds()).any(|k| {
                        calendar.next_match(prev + chrono::Duration::seconds(k))
                            == Some(prev + chrono::Duration::seconds(k))
                    })
            });
            if calendar.next_match(wall) == Some(wall) || gap_fire {
                expected.push(instant);
            }
            last_wall = Some(wall);
        }
        let mut got = Vec::new();
        let mut cursor = utc("2026-03-28T23:00:00Z");
        while let Some(next) = schedule.next_after(cursor) {
            if next.timestamp() >= end {
                break;
            }
            got.push(next);
            cursor = next;
        }
        assert_eq!(got, expected, "{expr}");
    }
}

// --- The old system's L, W and # forms ---------------------------------

fn dates(expr: &str, after: &str, n: usize) -> Vec<String> {
    next_n(expr, "UTC", after, n)
        .iter()
        .map(|t| t[..10].to_string())
        .collect()
}

#[test]
fn last_day_and_days_before_it_across_month_ends_and_leap_years() {
    assert_eq!(
        dates("0 0 0 L * ? *", "2024-01-15T00:00:00Z", 4),
        ["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30"]
    );
    assert_eq!(
        dates("0 0 0 L 2 ?", "2025-01-01T00:00:00Z", 2),
        ["2025-02-28", "2026-02-28"]
    );
    assert_eq!(
        dates("0 0 0 L-3 * ?", "2024-01-01T00:00:00Z", 3),
        ["2024-01-28", "2024-02-26", "2024-03-28"]
    );
    // A list may mix the forms: the 1st and the last day.
    assert_eq!(
        dates("0 0 1,L * *", "2026-04-02T00:00:00Z", 3),
        ["2026-04-30", "2026-05-01", "2026-05-31"]
    );
}

#[test]
fn nearest_weekday_stays_inside_the_month() {
    // 2026-08-01 is a Saturday: 1W is Monday the 3rd, not Friday 31 July.
    assert_eq!(
        dates("0 0 0 1W 8 ?", "2026-07-01T00:00:00Z", 1),
        ["2026-08-03"]
    );
    // 2026-05-31 is a Sunday: 31W is Friday the 29th, not Monday 1 June.
    assert_eq!(
        dates("0 0 0 31W 5 ?", "2026-05-01T00:00:00Z", 1),
        ["2026-05-29"]
    );
    // 2026-03-15 is a Sunday (-> Monday 16), 2026-08-15 a Saturday (-> Friday 14),
    // 2026-04-15 a Wednesday (itself).
    assert_eq!(
        dates("0 0 0 15W 3 ?", "2026-01-01T00:00:00Z", 1),
        ["2026-03-16"]
    );
    assert_eq!(
        dates("0 0 0 15W 8 ?", "2026-01-01T00:00:00Z", 1),
        ["2026-08-14"]
    );
    assert_eq!(
        dates("0 0 0 15W 4 ?", "2026-01-01T00:00:00Z", 1),
        ["2026-04-15"]
    );
    // 31W skips months without a 31st.
    assert_eq!(
        dates("0 0 0 31W * ?", "2026-04-01T00:00:00Z", 2),
        ["2026-05-29", "2026-07-31"]
    );
    // LW: the last weekday (2026-05-31 is a Sunday, 2026-10-31 a Saturday).
    assert_eq!(
        dates("0 0 0 LW * ?", "2026-05-01T00:00:00Z", 2),
        ["2026-05-29", "2026-06-30"]
    );
    assert_eq!(
        dates("0 0 0 LW 10 ?", "2026-01-01T00:00:00Z", 1),
        ["2026-10-30"]
    );
}

#[test]
fn last_and_nth_weekday_of_the_month() {
    // Last Friday, by number and by name.
    for expr in ["0 0 * * 5L", "0 0 * * FRIL", "0 0 * * fril"] {
        assert_eq!(
            dates(expr, "2026-01-01T00:00:00Z", 3),
            ["2026-01-30", "2026-02-27", "2026-03-27"],
            "{expr}"
        );
    }
    // Third Friday.
    for expr in ["0 0 * * 5#3", "0 0 * * FRI#3"] {
        assert_eq!(
            dates(expr, "2026-01-01T00:00:00Z", 3),
            ["2026-01-16", "2026-02-20", "2026-03-20"],
            "{expr}"
        );
    }
    // 7 is Sunday here too: the first Sunday.
    assert_eq!(
        dates("0 0 * * 7#1", "2026-01-01T00:00:00Z", 1),
        ["2026-01-04"]
    );
    // #5 skips months without a fifth such weekday: Fridays of 2026 come five
    // times in January, May, July and October.
    assert_eq!(
        dates("0 0 * * 5#5", "2026-01-01T00:00:00Z", 4),
        ["2026-01-30", "2026-05-29", "2026-07-31", "2026-10-30"]
    );
    // A fifth Monday in February needs a leap year whose 29 February is a
    // Monday: 2016, then 2044.
    assert_eq!(
        dates("0 0 * 2 1#5", "2017-01-01T00:00:00Z", 1),
        ["2044-02-29"]
    );
}

#[test]
fn the_or_rule_holds_with_the_new_forms() {
    // Both day fields restricted: the last day OR the first Monday.
    assert_eq!(
        dates("0 0 L * 1#1", "2026-01-01T00:00:00Z", 4),
        ["2026-01-05", "2026-01-31", "2026-02-02", "2026-02-28"]
    );
    // Day of month `*`: the day-of-week form alone decides.
    assert_eq!(
        dates("0 0 * * 1#1", "2026-01-01T00:00:00Z", 1),
        ["2026-01-05"]
    );
}

#[test]
fn the_new_forms_keep_the_dst_rules() {
    // Last Sunday of March 2026 in Berlin is the spring change: 02:30 does
    // not exist and fires once at 03:00 local (01:00 UTC).
    assert_eq!(
        next_n(
            "0 30 2 ? 3 SUNL",
            "Europe/Berlin",
            "2026-03-01T00:00:00Z",
            1
        ),
        ["2026-03-29T01:00:00Z"]
    );
    // Last Sunday of October: 02:30 happens twice and fires once, the first.
    assert_eq!(
        next_n(
            "0 30 2 ? 10 SUNL",
            "Europe/Berlin",
            "2026-10-01T00:00:00Z",
            2
        ),
        ["2026-10-25T00:30:00Z", "2027-10-31T00:30:00Z"]
    );
    // L in New York on the autumn change day (2026-11-01 is no month end,
    // so use 1W: Sunday the 1st -> Monday the 2nd, after the change).
    assert_eq!(
        next_n(
            "0 0 9 1W 11 ?",
            "America/New_York",
            "2026-10-01T00:00:00Z",
            1
        ),
        ["2026-11-02T14:00:00Z"]
    );
}

/// An independent oracle, written with chrono's calendar, for each form
/// over two whole years (one leap), in a zone with DST: the fire dates of
/// the search equal the oracle's.
#[test]
fn search_agrees_with_a_calendar_oracle_over_whole_years() {
    use chrono::Weekday;
    type Oracle = fn(NaiveDate) -> bool;
    fn nearest_weekday(d: NaiveDate, n: u32) -> bool {
        // The weekday of the month closest to day n (there are no ties).
        let Some(target) = d.with_day(n) else {
            return false;
        };
        let best = (1..=31)
            .filter_map(|k| d.with_day(k))
            .filter(|c| !matches!(c.weekday(), Weekday::Sat | Weekday::Sun))
            .min_by_key(|c| (c.signed_duration_since(target).num_days().abs(), c.day()));
        best == Some(d)
    }
    let cases: [(&str, Oracle); 9] = [
        ("0 0 12 L * ?", |d| {
            d.succ_opt().unwrap().month() != d.month()
        }),
        ("0 0 12 L-2 * ?", |d| {
            let later = d + chrono::Duration::days(2);
            later.month() == d.month() && later.succ_opt().unwrap().month() != d.month()
        }),
        ("0 0 12 1W * ?", |d| nearest_weekday(d, 1)),
        ("0 0 12 30W * ?", |d| nearest_weekday(d, 30)),
        ("0 0 12 LW * ?", |d| {
            !matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
                && (1..=3).all(|k| {
                    let later = d + chrono::Duration::days(k);
                    later.month() != d.month()
                        || matches!(later.weekday(), Weekday::Sat | Weekday::Sun)
                })
        }),
        ("0 0 12 ? * 2L", |d| {
            d.weekday() == Weekday::Tue && (d + chrono::Duration::days(7)).month() != d.month()
        }),
        ("0 0 12 ? * SUN#2", |d| {
            d.weekday() == Weekday::Sun && (d.day() - 1) / 7 == 1
        }),
        ("0 0 12 ? * 6#5", |d| {
            d.weekday() == Weekday::Sat && d.day() > 28
        }),
        ("0 0 12 L 1-6 3#1,5L", |d| {
            d.month() <= 6
                && (d.succ_opt().unwrap().month() != d.month()
                    || (d.weekday() == Weekday::Wed && d.day() <= 7)
                    || (d.weekday() == Weekday::Fri
                        && (d + chrono::Duration::days(7)).month() != d.month()))
        }),
    ];
    let zone = chrono_tz::Europe::Berlin;
    for (expr, oracle) in cases {
        let schedule = Schedule::parse(expr, zone).unwrap();
        let mut expected = Vec::new();
        let mut day = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        while day.year() < 2026 {
            if oracle(day) {
                expected.push(day);
            }
            day = day.succ_opt().unwrap();
        }
        let mut got = Vec::new();
        let mut cursor = utc("2023-12-31T23:00:00Z");
        while let Some(next) = schedule.next_after(cursor) {
            let local = next.with_timezone(&zone);
            if local.year() >= 2026 {
                break;
            }
            assert_eq!((local.hour(), local.minute()), (12, 0), "{expr}");
            got.push(local.date_naive());
            cursor = next;
        }
        assert_eq!(got, expected, "{expr}");
    }
}

#[test]
fn errors_for_the_new_forms_name_the_field_and_the_problem() {
    let table = [
        (
            "0 0 * * 5W",
            "day-of-week field: '5W': 'W' is only allowed in the day-of-month field",
        ),
        (
            "0 0 15W,L/2 * ?",
            "day-of-month field: 'L/2': L, W and # cannot take a step",
        ),
        (
            "0 0 * * 5#6",
            "day-of-week field: '5#6': the number after # must be 1 to 5",
        ),
        (
            "0 0 * * 5#0",
            "day-of-week field: '5#0': the number after # must be 1 to 5",
        ),
        (
            "0 0 1#2 * ?",
            "day-of-month field: '1#2': '#' is only allowed in the day-of-week field",
        ),
        (
            "0 L * * *",
            "hour field: 'L': 'L' is only allowed in the day fields (L: both, W: day of month, #: day of week)",
        ),
        (
            "0 0 * JUL-W *",
            "month field: 'JUL-W': 'W' is only allowed in the day fields (L: both, W: day of month, #: day of week)",
        ),
        (
            "0 0 L-31 * ?",
            "day-of-month field: 'L-31': the days before the last must be 1 to 30",
        ),
        (
            "0 0 32W * ?",
            "day-of-month field: '32W': W takes one day of the month, as in 15W",
        ),
        (
            "0 0 1-5W * ?",
            "day-of-month field: '1-5W': W takes one day of the month, as in 15W",
        ),
        (
            "0 0 * * L",
            "day-of-week field: 'L' is not DL or D#K (the last weekday D of the month, the K-th weekday D)",
        ),
        ("0 0 * * 8L", "day-of-week field: 8 is out of range 0-7"),
        (
            "0 0 * * XYZ#2",
            "day-of-week field: 'XYZ' is neither a number nor one of SUN MON TUE WED THU FRI SAT",
        ),
        (
            "0 0 L-30 2 ?",
            "the expression never fires (no calendar date matches it)",
        ),
    ];
    for (expr, expected) in table {
        assert_eq!(rejection(expr), expected, "{expr}");
    }
    // Names with the letters of the new forms still read as names.
    assert!(Schedule::parse("0 0 * JUL WED", Tz::UTC).is_ok());
    assert!(Schedule::parse("0 0 * APR-JUL MON-WED", Tz::UTC).is_ok());
}

// --- H: values spread by the job's name ---------------------------------

fn hashed(expr: &str, name: &str, after: &str, n: usize) -> Vec<String> {
    Schedule::parse_for_job(expr, Tz::UTC, name)
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
        .upcoming(utc(after), n)
        .iter()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .collect()
}

#[test]
fn h_values_are_pinned_per_name_so_every_worker_and_version_agrees() {
    // Pinned: a change here moves every H job of every user. Do not.
    let table = [
        (
            "H * * * *",
            "backup",
            "2026-01-01T00:37:00Z 2026-01-01T01:37:00Z 2026-01-01T02:37:00Z",
        ),
        (
            "H * * * *",
            "report",
            "2026-01-01T00:01:00Z 2026-01-01T01:01:00Z 2026-01-01T02:01:00Z",
        ),
        (
            "H H * * *",
            "backup",
            "2026-01-01T23:37:00Z 2026-01-02T23:37:00Z 2026-01-03T23:37:00Z",
        ),
        (
            "H/15 * * * *",
            "backup",
            "2026-01-01T00:07:00Z 2026-01-01T00:22:00Z 2026-01-01T00:37:00Z",
        ),
        (
            "H(0-29) 3 * * *",
            "backup",
            "2026-01-01T03:07:00Z 2026-01-02T03:07:00Z 2026-01-03T03:07:00Z",
        ),
        (
            "H H(8-17)/4 * * *",
            "backup",
            "2026-01-01T11:37:00Z 2026-01-01T15:37:00Z 2026-01-02T11:37:00Z",
        ),
        (
            "0 0 H * ?",
            "backup",
            "2026-01-19T00:00:00Z 2026-02-19T00:00:00Z 2026-03-19T00:00:00Z",
        ),
        (
            "0 0 * * H",
            "backup",
            "2026-01-05T00:00:00Z 2026-01-12T00:00:00Z 2026-01-19T00:00:00Z",
        ),
    ];
    for (expr, name, pinned) in table {
        assert_eq!(
            hashed(expr, name, "2026-01-01T00:00:00Z", 3).join(" "),
            pinned,
            "{expr} for {name}"
        );
    }
}

#[test]
fn h_spreads_ten_thousand_jobs_over_the_minute() {
    let mut per_second = [0u32; 60];
    for i in 0..10_000 {
        let schedule =
            Schedule::parse_for_job("H * * * * *", Tz::UTC, &format!("job-{i}")).unwrap();
        let next = schedule.next_after(utc("2026-01-01T00:00:00Z")).unwrap();
        per_second[next.second() as usize] += 1;
    }
    let mean = 10_000 / 60;
    let busiest = *per_second.iter().max().unwrap();
    assert!(
        busiest <= 2 * mean,
        "{busiest} jobs in one second (mean {mean}): {per_second:?}"
    );
    assert!(per_second.iter().all(|n| *n > 0), "{per_second:?}");
}

#[test]
fn h_errors_name_the_field_and_the_problem() {
    assert_eq!(
        rejection("H * * * *"),
        "minute field: 'H': H is derived from the job's name, and there is none here (distcron schedule --name NAME)"
    );
    let named = |expr: &str| {
        Schedule::parse_for_job(expr, Tz::UTC, "backup")
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        named("H(30-10) * * * *"),
        "minute field: range 30-10 of 'H(30-10)' runs backwards"
    );
    assert_eq!(
        named("H(0-70) * * * *"),
        "minute field: 70 is out of range 0-59"
    );
    assert_eq!(
        named("Hx * * * *"),
        "minute field: 'Hx' is not H, H(A-B), H/S or H(A-B)/S"
    );
    assert_eq!(
        named("H/0 * * * *"),
        "minute field: step must be at least 1"
    );
}

// --- @delay ------------------------------------------------------------

#[test]
fn fixed_delay_has_no_fire_times_of_its_own_and_says_why() {
    let schedule = Schedule::parse("@delay 1m30s", Tz::UTC).unwrap();
    assert_eq!(schedule.fixed_delay(), Some(Duration::from_secs(90)));
    assert_eq!(schedule.next_after(utc("2026-01-01T00:00:00Z")), None);
    assert_eq!(
        schedule.explain().unwrap(),
        "fixed delay: each run starts 1m30s after the previous run ends, so the next time depends on the run"
    );
    assert_eq!(
        Schedule::parse("@every 90s", Tz::UTC).unwrap().explain(),
        None
    );
    assert_eq!(rejection("@delay 0s"), "@delay: '0s': must be at least 1s");
    assert_eq!(
        rejection("@delay"),
        "unknown macro '@delay' (known: @yearly @annually @monthly @weekly @daily @midnight @hourly @every @delay)"
    );
    assert_eq!(
        rejection("@delay 3"),
        "@delay: '3': a number needs a unit (s, m, h or d)"
    );
}
