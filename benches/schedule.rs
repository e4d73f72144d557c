//! Next-fire computation throughput for typical expressions.
//! Run: `cargo bench --bench schedule`.

use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use distcron::schedule::{Schedule, parse_time_zone};

fn next_fire(c: &mut Criterion) {
    let after: DateTime<Utc> = "2026-03-10T12:34:56Z".parse().expect("valid timestamp");
    let mut group = c.benchmark_group("next_after");
    group.throughput(Throughput::Elements(1));
    for (expr, zone) in [
        ("*/5 * * * * * *", "UTC"),
        ("0 * * * * * *", "UTC"),
        ("30 9 * * MON-FRI", "UTC"),
        ("0 0 13 * FRI", "UTC"),
        ("0 0 29 2 *", "UTC"),
        ("@every 90s", "UTC"),
        ("30 9 * * MON-FRI", "Europe/Berlin"),
        ("*/5 * * * * * *", "America/New_York"),
        // The old system's month-relative forms, and H.
        ("0 0 0 L * ?", "UTC"),
        ("0 0 12 15W * ?", "UTC"),
        ("0 0 18 LW * ?", "UTC"),
        ("0 0 9 ? * 5L", "UTC"),
        ("0 0 9 ? * FRI#3", "UTC"),
        ("0 30 2 ? 3 SUNL", "Europe/Berlin"),
        ("H H(0-5) * * *", "UTC"),
    ] {
        let zone_tz = parse_time_zone(zone).expect("known zone");
        // H is resolved for a job name, as the worker does.
        let schedule =
            Schedule::parse_for_job(expr, zone_tz, "nightly-backup").expect("valid expression");
        group.bench_function(format!("{expr} [{zone}]"), |b| {
            b.iter(|| black_box(schedule.next_after(black_box(after))))
        });
    }
    group.finish();
}

criterion_group!(benches, next_fire);
criterion_main!(benches);
