//! The `distcron` binary as a user runs it.

use std::process::Command;

fn distcron(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_distcron"))
        .args(args)
        .output()
        .expect("run the distcron binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn schedule_prints_next_fire_times_one_per_line() {
    let (code, stdout, _) = distcron(&[
        "schedule",
        "0 0 * * 1",
        "--after",
        "2026-01-01T00:00:00Z",
        "--count",
        "2",
    ]);
    assert_eq!(code, 0);
    assert_eq!(stdout, "2026-01-05T00:00:00Z\n2026-01-12T00:00:00Z\n");
}

#[test]
fn schedule_day_fields_are_joined_with_or() {
    let (code, stdout, _) = distcron(&[
        "schedule",
        "0 0 13 * FRI",
        "--after",
        "2026-01-01T00:00:00Z",
        "--count",
        "3",
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        "2026-01-02T00:00:00Z\n2026-01-09T00:00:00Z\n2026-01-13T00:00:00Z\n"
    );
}

#[test]
fn schedule_that_never_fires_exits_2_with_one_line() {
    let (code, stdout, stderr) = distcron(&["schedule", "0 0 30 2 *"]);
    assert_eq!(code, 2);
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        "distcron schedule: cronExpr: the expression never fires (no calendar date matches it)\n"
    );
}

#[test]
fn bad_config_stops_the_program_naming_the_key() {
    let (code, _, stderr) = distcron(&["standalone", "--listen", "not-an-address"]);
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("distcron standalone: config key `listen` (from --listen)"),
        "{stderr}"
    );
}

#[test]
fn print_config_shows_the_effective_settings() {
    let (code, stdout, _) = distcron(&[
        "standalone",
        "--config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/standalone.json"),
        "--group",
        "batch",
        "--print-config",
    ]);
    assert_eq!(code, 0);
    let config: serde_json::Value = serde_json::from_str(&stdout).expect("JSON config");
    assert_eq!(config["group"], "batch");
    assert_eq!(config["listen"], "127.0.0.1:8070");
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_distcron"))
        .env_remove("DISTCRON_CONFIG")
        .args(["standalone", "--log-format", "json", "--log-level", "info"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    // The first log events; the one plain line is the admin-token notice.
    let lines: Vec<String> = stderr
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.starts_with("distcron: created an admin token"))
        .take(2)
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(
            event["level"].is_string() && event["fields"]["message"].is_string(),
            "{line}"
        );
        assert!(!line.contains('\u{1b}'), "no colour escapes: {line}");
    }
}
