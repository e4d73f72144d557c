use super::*;

fn rule(target: &str, on: &[Event]) -> Rule {
    Rule {
        target: target.into(),
        on: on.to_vec(),
    }
}

fn config() -> NotifyConfig {
    let hook = Target::Webhook(WebhookTarget {
        url: "https://hooks.example.com/x".into(),
        secret_file: String::new(),
        headers: Default::default(),
    });
    NotifyConfig {
        targets: [
            ("slack".to_string(), hook.clone()),
            ("pager".to_string(), hook),
        ]
        .into_iter()
        .collect(),
        rules: vec![rule("slack", &[Event::Failed])],
        groups: [("batch".to_string(), vec![rule("pager", &[Event::Lost])])]
            .into_iter()
            .collect(),
        throttle: Some(Throttle {
            max: 5,
            window_secs: 60,
        }),
        console_url: "https://cron.example.com/".into(),
    }
}

#[test]
fn a_job_s_own_rules_win_then_its_group_s_then_the_defaults() {
    let config = config();
    let mut job = Job::new("j", "true", "* * * * *");
    assert_eq!(config.rules_for(&job), &[rule("slack", &[Event::Failed])]);
    job.group = "batch".into();
    assert_eq!(config.rules_for(&job), &[rule("pager", &[Event::Lost])]);
    job.notify = Some(vec![rule("slack", &[Event::Missed])]);
    assert_eq!(config.rules_for(&job), &[rule("slack", &[Event::Missed])]);
    job.notify = Some(vec![]);
    assert!(
        config.rules_for(&job).is_empty(),
        "an empty list turns notifications off"
    );
}

#[test]
fn a_job_s_throttle_overrides_the_default() {
    let config = config();
    let mut job = Job::new("j", "true", "* * * * *");
    assert_eq!(config.throttle_for(&job).map(|t| t.max), Some(5));
    job.notify_throttle = Some(Throttle {
        max: 2,
        window_secs: 10,
    });
    assert_eq!(config.throttle_for(&job).map(|t| t.max), Some(2));
}

#[test]
fn events_map_from_statuses() {
    use crate::runlog::RunStatus as S;
    let table = [
        (S::Failed, Some(Event::Failed)),
        (S::TimedOut, Some(Event::TimedOut)),
        (S::Killed, Some(Event::Killed)),
        (S::Lost, Some(Event::Lost)),
        (S::Missed, Some(Event::Missed)),
        (S::Succeeded, Some(Event::Succeeded)),
        (S::Started, Some(Event::Started)),
        (S::Pending, None),
        (S::Skipped, None),
    ];
    for (status, event) in table {
        assert_eq!(Event::of_status(status), event, "{status:?}");
    }
    for (previous, recovery) in [
        (S::Failed, true),
        (S::TimedOut, true),
        (S::Killed, true),
        (S::Lost, true),
        (S::Missed, true),
        (S::Succeeded, false),
        (S::Skipped, false),
    ] {
        assert_eq!(is_recovery(previous), recovery, "{previous:?}");
    }
}

#[test]
fn targets_are_each_named_once_per_event() {
    let rules = [
        rule("a", &[Event::Failed, Event::Lost]),
        rule("b", &[Event::Lost]),
        rule("a", &[Event::Lost]),
    ];
    assert_eq!(targets_for(&rules, Event::Lost), ["a", "b"]);
    assert_eq!(targets_for(&rules, Event::Failed), ["a"]);
    assert!(targets_for(&rules, Event::Started).is_empty());
    assert_eq!(all_targets(&rules), ["a", "b"]);
}

#[test]
fn the_throttle_sends_max_then_holds_and_one_holder_summarizes() {
    use ThrottleDecision::*;
    let table = [
        (1, 3, Send),
        (3, 3, Send),
        (4, 3, HoldAndSummarize),
        (5, 3, Hold),
        (20, 3, Hold),
    ];
    for (count, max, expected) in table {
        assert_eq!(throttle_decision(count, max), expected, "{count} of {max}");
    }
    let t = Throttle {
        max: 1,
        window_secs: 60,
    };
    assert_eq!(throttle_window(&t, 125_000), (120_000, 180_000));
    assert_eq!(throttle_window(&t, 120_000), (120_000, 180_000));
}

#[test]
fn retries_back_off_from_one_second() {
    let delays: Vec<_> = (1..=MAX_ATTEMPTS).map(retry_delay).collect();
    use std::time::Duration as D;
    assert_eq!(
        delays,
        [
            None,
            Some(D::from_secs(1)),
            Some(D::from_secs(2)),
            Some(D::from_secs(4)),
            Some(D::from_secs(8))
        ]
    );
}

#[test]
fn the_output_tail_is_cut_at_a_character() {
    assert_eq!(tail_of("hello", 10), "hello");
    assert_eq!(tail_of("hello", 3), "llo");
    assert_eq!(tail_of("aé", 1), "", "é is two bytes: never half of it");
    assert_eq!(tail_of("aéb", 2), "b");
}

fn failed_record() -> RunRecord {
    RunRecord {
        params: Default::default(),
        triggered_by: None,
        run_id: "backup-1767225600000-w1".into(),
        job_name: "backup".into(),
        command: "false".into(),
        worker: "w1".into(),
        plan_time: 1_767_225_600_000,
        schedule_time: 1_767_225_600_000,
        start_time: 1_767_225_600_010,
        end_time: 1_767_225_601_510,
        status: RunStatus::Failed,
        exit_code: Some(3),
        signal: None,
        output: "x".repeat(5000) + "the end",
        truncated: false,
        err: String::new(),
        requested_by: None,
    }
}

#[test]
fn the_message_carries_the_run_s_facts() {
    let m = message_for(
        &failed_record(),
        Event::Failed,
        "https://cron.example.com/",
        0,
    );
    assert_eq!(m.event, "failed");
    assert_eq!(m.job, "backup");
    assert_eq!(m.exit_code, Some(3));
    assert_eq!(m.duration_ms, Some(1500));
    assert_eq!(m.planned_time.as_deref(), Some("2026-01-01T00:00:00.000Z"));
    assert_eq!(m.output.as_ref().map(String::len), Some(OUTPUT_TAIL_BYTES));
    assert!(m.output.as_ref().unwrap().ends_with("the end"));
    assert_eq!(
        m.url.as_deref(),
        Some("https://cron.example.com/#/run/backup-1767225600000-w1")
    );
    assert_eq!(
        m.text,
        "distcron: job backup failed (exit code 3), tick 2026-01-01T00:00:00.000Z on w1 <https://cron.example.com/#/run/backup-1767225600000-w1>"
    );
    assert_eq!(m.subject(), "[distcron] backup failed (exit code 3)");
    let body = m.plain_text();
    assert!(body.contains("exit code:   3"), "{body}");
    assert!(body.contains("job:         backup"), "{body}");

    let mut missed = failed_record();
    missed.status = RunStatus::Missed;
    missed.exit_code = None;
    missed.output.clear();
    let m = message_for(&missed, Event::Missed, "", 0);
    assert_eq!((m.start_time, m.end_time, m.url), (None, None, None));
    assert!(
        m.text.starts_with("distcron: job backup missed a tick"),
        "{}",
        m.text
    );
}

#[test]
fn a_summary_and_a_test_say_what_they_are() {
    let s = summary_for("backup", 17, (0, 60_000), 60_000);
    assert_eq!((s.event.as_str(), s.held_back), ("throttled", Some(17)));
    assert!(
        s.text.contains("17 more notification(s) held back"),
        "{}",
        s.text
    );
    let t = test_message("slack", "alice", 0);
    assert_eq!(t.event, "test");
    assert_eq!(t.subject(), "[distcron] test notification");
}

#[test]
fn the_signature_is_hmac_sha256_of_the_body() {
    // RFC 4231 test case 2.
    assert_eq!(
        send::signature(b"Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn configuration_errors_name_the_place() {
    let mut c = config();
    assert_eq!(c.validate(), Ok(()));
    c.rules.push(rule("nowhere", &[Event::Failed]));
    let e = c.validate().unwrap_err();
    assert!(e.starts_with("rules: no target named 'nowhere'"), "{e}");
    let mut c = config();
    c.targets.insert(
        "mail".into(),
        Target::Email(EmailTarget {
            host: "smtp.example.com".into(),
            port: 587,
            security: SmtpSecurity::Starttls,
            user: "u".into(),
            password_file: String::new(),
            from: "distcron@example.com".into(),
            to: vec!["ops@example.com".into()],
        }),
    );
    assert_eq!(
        c.validate().unwrap_err(),
        "targets.mail: user and passwordFile go together"
    );
    let mut c = config();
    c.targets.insert(
        "hook".into(),
        Target::Webhook(WebhookTarget {
            url: "ftp://x".into(),
            secret_file: String::new(),
            headers: Default::default(),
        }),
    );
    assert!(
        c.validate()
            .unwrap_err()
            .starts_with("targets.hook: url 'ftp://x'")
    );
    assert!(check_job_rules(&[rule("a", &[])]).is_err());
    assert!(
        check_throttle(&Throttle {
            max: 0,
            window_secs: 1
        })
        .is_err()
    );
    assert!(
        check_throttle(&Throttle {
            max: 1,
            window_secs: 0
        })
        .is_err()
    );
}
