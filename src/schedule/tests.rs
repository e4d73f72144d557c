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
        "unknown macro '@every' (known: @yearly @annually @monthly @weekly @daily @midnight @hourly @every)"
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
