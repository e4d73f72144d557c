//! The few HTTP calls the harness makes: health checks, etcd's metrics, and
//! the manager's API to create jobs and count workers.

use std::sync::OnceLock;
use std::time::Duration;

use ureq::Agent;

/// The admin token the harness starts managers with and sends.
pub const ADMIN_TOKEN: &str = "loadtest-admin-token-0123456789";

fn agent() -> &'static Agent {
    static AGENT: OnceLock<Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into()
    })
}

pub fn get_text(url: &str) -> Option<String> {
    let mut response = agent().get(url).call().ok()?;
    if !response.status().is_success() {
        return None;
    }
    response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .ok()
}

/// GET `path` of the manager at `base` as the harness's admin: the body
/// of a successful answer.
fn get_as_admin(base: &str, path: &str) -> Option<String> {
    let mut response = agent()
        .get(&format!("{base}{path}"))
        .header("authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.body_mut().read_to_string().ok()
}

/// The manager's `/metrics`.
pub fn manager_metrics(base: &str) -> Option<String> {
    get_as_admin(base, "/metrics")
}

/// The sum over every series of `family` in a Prometheus text page.
pub fn metric_sum(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn get_ok(url: &str) -> bool {
    get_text(url).is_some()
}

/// How many workers the manager at `base` lists.
pub fn worker_count(base: &str) -> Option<usize> {
    let text = get_as_admin(base, "/worker/list")?;
    let body: serde_json::Value = serde_json::from_str(&text).ok()?;
    body["data"].as_array().map(Vec::len)
}

/// `POST /job/save` with a JSON body; the envelope's message on failure.
pub fn save_job(base: &str, job: &serde_json::Value) -> Result<(), String> {
    let mut response = agent()
        .post(&format!("{base}/job/save"))
        .header("content-type", "application/json")
        .header("authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .send(job.to_string())
        .map_err(|e| format!("POST {base}/job/save: {e}"))?;
    if response.status().is_success() {
        return Ok(());
    }
    let text = response.body_mut().read_to_string().unwrap_or_default();
    Err(format!(
        "POST {base}/job/save {}: {text}",
        response.status()
    ))
}

#[cfg(test)]
mod tests {
    use super::metric_sum;

    #[test]
    fn a_family_is_summed_over_its_series_and_no_other() {
        let page = "# TYPE distcron_runs_total counter\n\
                    distcron_runs_total{worker=\"w1\",status=\"succeeded\"} 10\n\
                    distcron_runs_total{worker=\"w2\",status=\"failed\"} 2\n\
                    distcron_runs_total_extra 100\n\
                    distcron_journal_fsyncs_total{worker=\"w1\"} 7\n";
        assert_eq!(metric_sum(page, "distcron_runs_total"), 12.0);
        assert_eq!(metric_sum(page, "distcron_journal_fsyncs_total"), 7.0);
        assert_eq!(metric_sum(page, "distcron_missing"), 0.0);
    }
}
