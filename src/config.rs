//! Configuration: defaults, then a JSON file, then `DISTCRON_*` environment
//! variables, then command-line flags, each layer overriding the one before.
//!
//! The key list is the [`Config`] struct itself: its serialised default names
//! every key and its JSON type, and the environment variable and flag of a key
//! are derived from its name (`etcdEndpoints` is `DISTCRON_ETCD_ENDPOINTS` and
//! `--etcd-endpoints`). So a key added to the struct is configurable every way
//! at once, and an unknown key is an error wherever it is written.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Every setting of every binary. A binary ignores the keys it has no use for
/// (the manager has no `group`), so one environment can serve all of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// Address of the HTTP API and console.
    pub listen: String,
    /// The console's files (`index.html`, `js/`, `css/`, and the npm
    /// packages in `node_modules/`); empty serves no console.
    pub webroot: String,
    /// etcd client endpoints (`host:port`), several for a cluster.
    pub etcd_endpoints: Vec<String>,
    /// Prefix of every distcron key in etcd.
    pub etcd_prefix: String,
    /// Time allowed to open a connection to an etcd endpoint.
    pub etcd_dial_timeout_ms: u64,
    /// Time allowed for one etcd request.
    pub etcd_request_timeout_ms: u64,
    /// etcd user and password, when etcd has authentication on.
    pub etcd_user: String,
    pub etcd_password: String,
    /// TLS to etcd: CA bundle, and client certificate and key (PEM files).
    pub etcd_ca_file: String,
    pub etcd_cert_file: String,
    pub etcd_key_file: String,
    /// MongoDB connection string for the run log.
    pub mongodb_uri: String,
    /// Database and collection of the run log.
    pub mongodb_database: String,
    pub mongodb_collection: String,
    /// Acknowledgement asked of run log writes: `majority` (a failover
    /// cannot roll them back) or a number of members.
    pub mongodb_write_concern: String,
    /// The longest a run log write may take; past it the batch is retried.
    pub mongodb_write_timeout_ms: u64,
    /// Directory of the embedded stores (`distcron standalone`).
    pub data_dir: String,
    /// This worker's id, unique in the cluster; empty means host name + pid.
    pub worker_id: String,
    /// The job group this worker serves.
    pub group: String,
    /// `error`, `warn`, `info`, `debug` or `trace`, or a tracing filter such
    /// as `distcron=debug,info`.
    pub log_level: String,
    /// `text` (one line per event; colour only on a terminal) or `json` (one
    /// JSON object per line, for log shippers).
    pub log_format: String,
    /// Worker session lease TTL: how soon a dead worker's jobs move.
    pub session_ttl_secs: u64,
    /// Between SIGTERM and SIGKILL when a run is killed or times out.
    pub kill_grace_ms: u64,
    /// On SIGTERM, how long a worker lets runs in progress finish.
    pub stop_grace_secs: u64,
    /// Output kept per run (stdout and stderr together).
    pub output_cap_bytes: u64,
    /// Most runs a worker has going at once; a start over it waits in line
    /// (the job's `queueTimeout`), then is recorded `skipped`.
    pub max_concurrent_runs: u64,
    /// Threads that start, watch and reap a worker's runs, off the actors'
    /// thread (one per core by default; 0 runs them on the actors' thread).
    pub run_threads: u64,
    /// Run records per write to the run log.
    pub batch_size: u64,
    /// Longest wait before a partial batch is written.
    pub batch_delay_ms: u64,
    /// The worker's run journal: every run record waits here until the run
    /// log has it. Empty means `<dataDir>/journal-<workerId>/`. It replaces
    /// the spool (`spoolPath`, `spoolMaxBytes`).
    pub journal_dir: String,
    pub journal_max_bytes: u64,
    /// How long a tick claim is kept after its minute.
    pub claim_retention_secs: u64,
    /// How long before its tick a worker claims it, so etcd's latency is
    /// not added to the start.
    pub claim_lead_ms: u64,
    /// How far back a new owner of a job looks for ticks nobody ran (jobs
    /// may set their own `misfireWindowSecs`); must stay below
    /// `claimRetentionSecs` minus 30 s so a tick found free is never one
    /// whose claim already expired.
    pub misfire_window_secs: u64,
    /// etcd history kept by distcron's compactor (0: leave compaction to etcd).
    pub etcd_history_secs: u64,
    /// Run log retention, applied hourly by managers (0 turns a rule off).
    pub retention_max_age_days: u64,
    pub retention_max_runs_per_job: u64,
    /// Every API request needs credentials. Turning it off is refused on a
    /// listen address that is not loopback.
    pub auth_required: bool,
    /// A token accepted as an admin's (scripts, tests, the first sign-in).
    pub admin_token: String,
    /// Read `adminToken` from this file instead (its first line).
    pub admin_token_file: String,
    /// Read `etcdPassword` and `mongodbUri` from files instead.
    pub etcd_password_file: String,
    pub mongodb_uri_file: String,
    /// Host names a request may address (DNS-rebinding defence); empty:
    /// the listen address and loopback names.
    pub allowed_hosts: Vec<String>,
    /// Browser origins besides the server's own that may send mutating
    /// requests (`https://ops.example.com`).
    pub allowed_origins: Vec<String>,
    /// Proxy addresses whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<String>,
    /// Serve `/metrics` without credentials.
    pub metrics_public: bool,
    /// A console session ends after this long unused.
    pub session_idle_secs: u64,
    /// HTTPS: certificate chain and private key (PEM). Both or neither.
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// Variables of the worker's own environment that a job's command gets
    /// (nothing else of it: the worker's secrets stay out of jobs).
    pub job_env_allowlist: Vec<String>,
    /// Most jobs the cluster holds; a save past it is refused.
    pub max_jobs: u64,
    /// Notifications: named targets (web hooks, email), default and
    /// per-group rules, the default throttle, the console's address for
    /// links (see docs/notifications.md). A JSON object, in an environment
    /// variable or flag too.
    pub notify: crate::notify::NotifyConfig,
    /// Where a worker serves the live output of its runs to managers
    /// (`GET /run/tail` through any manager); port 0 picks a free one. The
    /// address is registered in `workers/<id>` with a per-process secret.
    pub live_listen: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: "127.0.0.1:8070".into(),
            webroot: "./webroot".into(),
            etcd_endpoints: vec!["127.0.0.1:2379".into()],
            etcd_prefix: "/distcron/".into(),
            etcd_dial_timeout_ms: 5_000,
            etcd_request_timeout_ms: 5_000,
            etcd_user: String::new(),
            etcd_password: String::new(),
            etcd_ca_file: String::new(),
            etcd_cert_file: String::new(),
            etcd_key_file: String::new(),
            mongodb_uri: "mongodb://127.0.0.1:27017/?directConnection=true".into(),
            mongodb_database: "distcron".into(),
            mongodb_collection: "runs".into(),
            mongodb_write_concern: "majority".into(),
            mongodb_write_timeout_ms: 10_000,
            data_dir: "./distcron-data".into(),
            worker_id: String::new(),
            group: "default".into(),
            log_level: "info".into(),
            log_format: "text".into(),
            session_ttl_secs: 10,
            kill_grace_ms: 5_000,
            stop_grace_secs: 30,
            output_cap_bytes: crate::runlog::DEFAULT_OUTPUT_CAP as u64,
            max_concurrent_runs: crate::runner::slots::DEFAULT_MAX_CONCURRENT_RUNS as u64,
            run_threads: crate::runner::launcher::default_threads() as u64,
            batch_size: 100,
            batch_delay_ms: 1_000,
            journal_dir: String::new(),
            journal_max_bytes: 1 << 30,
            claim_retention_secs: 300,
            claim_lead_ms: 1000,
            misfire_window_secs: 60,
            etcd_history_secs: 300,
            retention_max_age_days: 30,
            retention_max_runs_per_job: 10_000,
            auth_required: true,
            admin_token: String::new(),
            admin_token_file: String::new(),
            etcd_password_file: String::new(),
            mongodb_uri_file: String::new(),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            metrics_public: false,
            session_idle_secs: 3_600,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            job_env_allowlist: ["PATH", "HOME", "LANG", "TZ"].map(String::from).to_vec(),
            max_jobs: crate::job::DEFAULT_MAX_JOBS as u64,
            notify: crate::notify::NotifyConfig::default(),
            live_listen: "127.0.0.1:0".into(),
        }
    }
}

/// Which binary is loading: decides the default config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Standalone,
    Manager,
    Worker,
}

impl Role {
    /// The file read when `--config` is not given, if it exists.
    pub fn default_file(self) -> &'static str {
        match self {
            Role::Standalone => "config/standalone.json",
            Role::Manager => "config/manager.json",
            Role::Worker => "config/worker.json",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    #[error("config key `{key}` (from {origin}): {message}")]
    Key {
        key: String,
        origin: String,
        message: String,
    },
    #[error("unknown config key `{key}` (from {origin}); known keys: {known}")]
    UnknownKey {
        key: String,
        origin: String,
        known: String,
    },
    #[error("{0}")]
    Usage(String),
}

/// What the command line asked for besides settings.
#[derive(Debug, Default, PartialEq)]
pub struct Loaded {
    pub config: Config,
    /// `--print-config`: print the effective configuration and exit.
    pub print_config: bool,
}

/// Load the configuration for `role` from the file, `env` and `args` (the
/// arguments after the program name and subcommand).
pub fn load(
    role: Role,
    args: &[String],
    env: &BTreeMap<String, String>,
) -> Result<Loaded, ConfigError> {
    let defaults = match serde_json::to_value(Config::default()) {
        Ok(Value::Object(map)) => map,
        _ => unreachable!("Config serialises to a JSON object"),
    };

    let flags = parse_flags(args)?;
    let file = flags
        .config_file
        .clone()
        .or_else(|| env.get("DISTCRON_CONFIG").cloned());
    let mut merged = defaults.clone();
    let mut sources: BTreeMap<String, String> = BTreeMap::new();

    let file_values = match &file {
        Some(path) => Some((path.clone(), read_file(Path::new(path))?)),
        None if Path::new(role.default_file()).exists() => Some((
            role.default_file().to_string(),
            read_file(Path::new(role.default_file()))?,
        )),
        None => None,
    };
    if let Some((path, values)) = file_values {
        for (key, value) in values {
            let source = format!("file {path}");
            check_known(&defaults, &key, &source)?;
            merged.insert(key.clone(), value);
            sources.insert(key, source);
        }
    }

    for (key, default) in &defaults {
        let var = env_name(key);
        if let Some(text) = env.get(&var) {
            merged.insert(key.clone(), from_text(key, default, text, &var)?);
            sources.insert(key.clone(), var);
        }
    }
    for (flag, text) in &flags.settings {
        let key = key_of_flag(flag);
        let source = format!("--{flag}");
        check_known(&defaults, &key, &source)?;
        merged.insert(
            key.clone(),
            from_text(&key, &defaults[&key], text, &source)?,
        );
        sources.insert(key, source);
    }

    // Types first, key by key, so the error names the key and where it came from.
    for (key, value) in &merged {
        if std::mem::discriminant(value) != std::mem::discriminant(&defaults[key])
            || (value.is_array() && !value.as_array().into_iter().flatten().all(Value::is_string))
        {
            return Err(key_error(
                key,
                &sources,
                format!("expected {}", kind_name(&defaults[key])),
            ));
        }
    }
    // An object-valued key is read on its own first, so its errors name it.
    if let Some(notify) = merged.get("notify") {
        serde_json::from_value::<crate::notify::NotifyConfig>(notify.clone())
            .map_err(|e| key_error("notify", &sources, e.to_string()))?;
    }
    let mut config: Config = serde_json::from_value(Value::Object(merged))
        .map_err(|e| ConfigError::Usage(format!("config: {e}")))?;
    if config.worker_id.is_empty() {
        config.worker_id = default_worker_id();
    }
    read_secret_files(&mut config).map_err(|(key, message)| key_error(key, &sources, message))?;
    validate(&config).map_err(|(key, message)| key_error(key, &sources, message))?;
    Ok(Loaded {
        config,
        print_config: flags.print_config,
    })
}

/// Secrets given as files (`adminTokenFile`...): the file's first line
/// becomes the secret. Both a secret and its file is an error.
fn read_secret_files(config: &mut Config) -> Result<(), (&'static str, String)> {
    let pairs: [(&'static str, &str, &mut String); 3] = [
        (
            "adminTokenFile",
            &config.admin_token_file,
            &mut config.admin_token,
        ),
        (
            "etcdPasswordFile",
            &config.etcd_password_file,
            &mut config.etcd_password,
        ),
        (
            "mongodbUriFile",
            &config.mongodb_uri_file,
            &mut config.mongodb_uri,
        ),
    ];
    for (key, file, secret) in pairs {
        if file.is_empty() {
            continue;
        }
        let text =
            std::fs::read_to_string(file).map_err(|e| (key, format!("cannot read {file}: {e}")))?;
        let line = text.lines().next().unwrap_or("").trim();
        if line.is_empty() {
            return Err((key, format!("{file} is empty")));
        }
        *secret = line.to_string();
    }
    Ok(())
}

impl Config {
    /// This configuration with every secret replaced by `***` (and the
    /// password of a MongoDB URI), for printing and logging.
    pub fn redacted(&self) -> Config {
        let mut shown = self.clone();
        for value in [&mut shown.admin_token, &mut shown.etcd_password] {
            if !value.is_empty() {
                *value = "***".into();
            }
        }
        shown.mongodb_uri = redact_uri(&self.mongodb_uri);
        // Web hook headers may carry API keys; a Slack-style URL is a secret.
        for target in shown.notify.targets.values_mut() {
            if let crate::notify::Target::Webhook(hook) = target {
                hook.headers.values_mut().for_each(|v| *v = "***".into());
                if let Some((base, _)) = hook.url.split_once("://").and_then(|(scheme, rest)| {
                    rest.split_once('/')
                        .map(|(host, _)| (format!("{scheme}://{host}"), ()))
                }) {
                    hook.url = format!("{base}/***");
                }
            }
        }
        shown
    }
}

/// `mongodb://user:pass@host` -> `mongodb://user:***@host`.
pub fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((credentials, hosts)) => {
            let user = credentials.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{hosts}{tail}")
        }
        None => uri.to_string(),
    }
}

/// Semantic checks that the JSON types alone do not catch.
fn validate(config: &Config) -> Result<(), (&'static str, String)> {
    config.notify.validate().map_err(|m| ("notify", m))?;
    config.live_listen.parse::<SocketAddr>().map_err(|_| {
        (
            "liveListen",
            format!(
                "'{}' is not an address such as 127.0.0.1:0",
                config.live_listen
            ),
        )
    })?;
    config.listen.parse::<SocketAddr>().map_err(|_| {
        (
            "listen",
            format!(
                "'{}' is not an address such as 127.0.0.1:8070",
                config.listen
            ),
        )
    })?;
    if config.etcd_endpoints.is_empty() || config.etcd_endpoints.iter().any(|e| e.trim().is_empty())
    {
        return Err((
            "etcdEndpoints",
            "needs at least one non-empty host:port".into(),
        ));
    }
    if !config.etcd_prefix.ends_with('/') {
        return Err(("etcdPrefix", "must end with '/'".into()));
    }
    if config.etcd_dial_timeout_ms == 0 || config.etcd_request_timeout_ms == 0 {
        let key = if config.etcd_dial_timeout_ms == 0 {
            "etcdDialTimeoutMs"
        } else {
            "etcdRequestTimeoutMs"
        };
        return Err((key, "must be at least 1".into()));
    }
    if config.etcd_cert_file.is_empty() != config.etcd_key_file.is_empty() {
        return Err((
            "etcdCertFile",
            "etcdCertFile and etcdKeyFile go together".into(),
        ));
    }
    if !(config.mongodb_uri.starts_with("mongodb://")
        || config.mongodb_uri.starts_with("mongodb+srv://"))
    {
        return Err((
            "mongodbUri",
            "must start with mongodb:// or mongodb+srv://".into(),
        ));
    }
    if config.data_dir.is_empty() {
        return Err(("dataDir", "must not be empty".into()));
    }
    if config.group.is_empty() {
        return Err(("group", "must not be empty".into()));
    }
    crate::runlog::mongo::write_concern(&config.mongodb_write_concern, Duration::from_secs(1))
        .map_err(|why| ("mongodbWriteConcern", why))?;
    for (key, value, min) in [
        ("sessionTtlSecs", config.session_ttl_secs, 2),
        ("batchSize", config.batch_size, 1),
        ("batchDelayMs", config.batch_delay_ms, 1),
        ("outputCapBytes", config.output_cap_bytes, 1),
        ("maxConcurrentRuns", config.max_concurrent_runs, 1),
        ("journalMaxBytes", config.journal_max_bytes, 1 << 20),
        (
            "mongodbWriteTimeoutMs",
            config.mongodb_write_timeout_ms,
            100,
        ),
        ("claimRetentionSecs", config.claim_retention_secs, 10),
        ("sessionIdleSecs", config.session_idle_secs, 60),
        ("maxJobs", config.max_jobs, 1),
    ] {
        if value < min {
            return Err((key, format!("must be at least {min}")));
        }
    }
    let claims = crate::coord::claims::ClaimPolicy {
        retention: Duration::from_secs(config.claim_retention_secs),
        ..Default::default()
    };
    if Duration::from_secs(config.misfire_window_secs) > claims.max_misfire_window() {
        return Err((
            "misfireWindowSecs",
            format!(
                "{} s outlives the tick claims it relies on: claimRetentionSecs is {} s, so the window may be at most {} s",
                config.misfire_window_secs,
                config.claim_retention_secs,
                claims.max_misfire_window().as_secs()
            ),
        ));
    }
    if !config.auth_required {
        let loopback = config
            .listen
            .parse::<SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback());
        if !loopback {
            return Err((
                "authRequired",
                format!(
                    "may be false only on a loopback listen address, not {}",
                    config.listen
                ),
            ));
        }
    }
    if config.tls_cert_file.is_empty() != config.tls_key_file.is_empty() {
        return Err((
            "tlsCertFile",
            "tlsCertFile and tlsKeyFile go together".into(),
        ));
    }
    if let Some(bad) = config
        .trusted_proxies
        .iter()
        .find(|a| a.parse::<std::net::IpAddr>().is_err())
    {
        return Err(("trustedProxies", format!("'{bad}' is not an IP address")));
    }
    if let Some(bad) = config
        .allowed_origins
        .iter()
        .find(|o| !(o.starts_with("http://") || o.starts_with("https://")))
    {
        return Err((
            "allowedOrigins",
            format!("'{bad}' is not an origin such as https://ops.example.com"),
        ));
    }
    crate::job::validate_worker_id(&config.worker_id).map_err(|m| ("workerId", m))?;
    if !matches!(config.log_format.as_str(), "text" | "json") {
        return Err((
            "logFormat",
            format!("'{}' is not text or json", config.log_format),
        ));
    }
    tracing_subscriber::EnvFilter::try_new(&config.log_level).map_err(|e| {
        (
            "logLevel",
            format!("'{}' is not a level or filter: {e}", config.log_level),
        )
    })?;
    Ok(())
}

fn key_error(key: &str, sources: &BTreeMap<String, String>, message: String) -> ConfigError {
    ConfigError::Key {
        key: key.to_string(),
        origin: sources
            .get(key)
            .cloned()
            .unwrap_or_else(|| "default".into()),
        message,
    }
}

fn check_known(defaults: &Map<String, Value>, key: &str, source: &str) -> Result<(), ConfigError> {
    if defaults.contains_key(key) {
        return Ok(());
    }
    Err(ConfigError::UnknownKey {
        key: key.to_string(),
        origin: source.to_string(),
        known: {
            let mut keys: Vec<&str> = defaults.keys().map(String::as_str).collect();
            keys.sort_unstable();
            keys.join(", ")
        },
    })
}

fn read_file(path: &Path) -> Result<Map<String, Value>, ConfigError> {
    let err = |message: String| ConfigError::File {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot be read: {e}")))?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(err("must hold a JSON object of settings".into())),
        Err(e) => Err(err(format!("is not valid JSON: {e}"))),
    }
}

/// Turn an environment or flag string into a JSON value of the key's type.
fn from_text(key: &str, default: &Value, text: &str, source: &str) -> Result<Value, ConfigError> {
    let bad = |message: String| ConfigError::Key {
        key: key.to_string(),
        origin: source.to_string(),
        message,
    };
    Ok(match default {
        Value::Array(_) => Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        Value::Number(_) => Value::Number(
            text.trim()
                .parse::<u64>()
                .map_err(|_| bad(format!("'{text}' is not a whole number")))?
                .into(),
        ),
        Value::Bool(_) => Value::Bool(match text.trim() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(bad(format!("'{text}' is not true or false"))),
        }),
        Value::Object(_) => serde_json::from_str::<Value>(text)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| bad(format!("'{text}' is not a JSON object")))?,
        _ => Value::String(text.to_string()),
    })
}

fn kind_name(default: &Value) -> &'static str {
    match default {
        Value::Array(_) => "a list of strings",
        Value::Number(_) => "a whole number",
        Value::Bool(_) => "true or false",
        Value::Object(_) => "a JSON object",
        _ => "a string",
    }
}

/// `etcdEndpoints` -> `DISTCRON_ETCD_ENDPOINTS`.
pub fn env_name(key: &str) -> String {
    let mut out = String::from("DISTCRON_");
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// `etcdEndpoints` -> `etcd-endpoints`.
pub fn flag_name(key: &str) -> String {
    let mut out = String::new();
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// `etcd-endpoints` -> `etcdEndpoints`.
fn key_of_flag(flag: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in flag.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Debug, Default)]
struct Flags {
    config_file: Option<String>,
    print_config: bool,
    settings: Vec<(String, String)>,
}

/// `--key value` or `--key=value`, plus `--config FILE` and `--print-config`.
fn parse_flags(args: &[String]) -> Result<Flags, ConfigError> {
    let mut flags = Flags::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let Some(body) = arg.strip_prefix("--") else {
            return Err(ConfigError::Usage(format!(
                "unexpected argument '{arg}' (settings are written --key value)"
            )));
        };
        if body == "print-config" {
            flags.print_config = true;
            continue;
        }
        let (name, value) = match body.split_once('=') {
            Some((name, value)) => (name.to_string(), value.to_string()),
            None => {
                let value = iter
                    .next()
                    .ok_or_else(|| ConfigError::Usage(format!("--{body} needs a value")))?;
                (body.to_string(), value.clone())
            }
        };
        if name == "config" {
            flags.config_file = Some(value);
        } else {
            flags.settings.push((name, value));
        }
    }
    Ok(flags)
}

/// Host name + pid: unique per process on a machine, readable in listings.
fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}-{}", std::process::id())
}

/// For binaries: load from the process's arguments (after `skip` of them) and
/// environment; on an error, or after `--print-config`, print and exit.
pub fn load_or_exit(role: Role, program: &str, skip: usize) -> Config {
    let args: Vec<String> = std::env::args().skip(skip).collect();
    match load(role, &args, &process_env()) {
        Ok(Loaded {
            config,
            print_config: true,
        }) => {
            let text = serde_json::to_string_pretty(&config.redacted()).expect("config serialises");
            println!("{text}");
            std::process::exit(0);
        }
        Ok(loaded) => loaded.config,
        Err(e) => {
            eprintln!("{program}: {e}");
            std::process::exit(2);
        }
    }
}

/// The process environment, for [`load`].
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

/// The etcd connection settings of `config`.
pub fn etcd_options(config: &Config) -> crate::coord::etcd::EtcdOptions {
    let some = |s: &String| (!s.is_empty()).then(|| s.clone());
    let mut options =
        crate::coord::etcd::EtcdOptions::new(config.etcd_endpoints.clone(), &config.etcd_prefix);
    options.dial_timeout = std::time::Duration::from_millis(config.etcd_dial_timeout_ms);
    options.request_timeout = std::time::Duration::from_millis(config.etcd_request_timeout_ms);
    options.user = some(&config.etcd_user).map(|u| (u, config.etcd_password.clone()));
    options.ca_file = some(&config.etcd_ca_file);
    options.cert_file = some(&config.etcd_cert_file);
    options.key_file = some(&config.etcd_key_file);
    options
}

/// The run log connection settings of `config`.
pub fn mongo_options(config: &Config) -> crate::runlog::mongo::MongoOptions {
    let mut options = crate::runlog::mongo::MongoOptions::new(&config.mongodb_uri);
    options.database = config.mongodb_database.clone();
    options.collection = config.mongodb_collection.clone();
    options.write_concern = config.mongodb_write_concern.clone();
    options.write_timeout = Duration::from_millis(config.mongodb_write_timeout_ms);
    options
}

/// The run log retention of `config`.
pub fn retention(config: &Config) -> crate::runlog::Retention {
    crate::runlog::Retention {
        max_age_days: config.retention_max_age_days,
        max_runs_per_job: config.retention_max_runs_per_job,
    }
}

/// Where the embedded stores keep their files.
pub fn data_path(config: &Config, file: &str) -> PathBuf {
    Path::new(&config.data_dir).join(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn env(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn temp_file(contents: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), contents).unwrap();
        file
    }

    fn load_err(a: &[&str], e: &[(&str, &str)]) -> String {
        load(Role::Manager, &args(a), &env(e))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn names_derive_from_keys() {
        assert_eq!(env_name("etcdEndpoints"), "DISTCRON_ETCD_ENDPOINTS");
        assert_eq!(env_name("listen"), "DISTCRON_LISTEN");
        assert_eq!(flag_name("mongodbUri"), "mongodb-uri");
        assert_eq!(key_of_flag("mongodb-uri"), "mongodbUri");
    }

    #[test]
    fn layers_override_in_order_file_env_flag() {
        let file =
            temp_file(r#"{"listen":"127.0.0.1:1000","group":"fromfile","logLevel":"debug"}"#);
        let path = file.path().to_str().unwrap();
        let loaded = load(
            Role::Worker,
            &args(&["--config", path, "--group=fromflag"]),
            &env(&[
                ("DISTCRON_LISTEN", "127.0.0.1:2000"),
                ("DISTCRON_GROUP", "fromenv"),
                ("DISTCRON_ETCD_ENDPOINTS", "127.0.0.1:2379, 127.0.0.1:22379"),
            ]),
        )
        .unwrap();
        let c = loaded.config;
        assert_eq!(c.listen, "127.0.0.1:2000");
        assert_eq!(c.group, "fromflag");
        assert_eq!(c.log_level, "debug");
        assert_eq!(c.etcd_endpoints, ["127.0.0.1:2379", "127.0.0.1:22379"]);
        assert_eq!(
            c.data_dir, "./distcron-data",
            "untouched keys keep defaults"
        );
        assert!(!c.worker_id.is_empty(), "worker id defaults to host + pid");
    }

    #[test]
    fn unknown_keys_are_errors_wherever_written() {
        let file = temp_file(r#"{"listne":"127.0.0.1:1"}"#);
        let msg = load_err(&["--config", file.path().to_str().unwrap()], &[]);
        assert!(
            msg.starts_with("unknown config key `listne` (from file "),
            "{msg}"
        );
        assert!(
            msg.contains("; known keys: ") && msg.contains(", listen, "),
            "{msg}"
        );
        let msg = load_err(&["--lissen", "x"], &[]);
        assert!(
            msg.starts_with("unknown config key `lissen` (from --lissen)"),
            "{msg}"
        );
    }

    #[test]
    fn bad_values_name_the_key_and_source() {
        assert_eq!(
            load_err(&[], &[("DISTCRON_LISTEN", "nowhere")]),
            "config key `listen` (from DISTCRON_LISTEN): 'nowhere' is not an address such as 127.0.0.1:8070"
        );
        let file = temp_file(r#"{"etcdEndpoints":"127.0.0.1:2379"}"#);
        let msg = load_err(&["--config", file.path().to_str().unwrap()], &[]);
        assert!(
            msg.starts_with("config key `etcdEndpoints` (from file ")
                && msg.ends_with("expected a list of strings"),
            "{msg}"
        );
        assert_eq!(
            load_err(&["--mongodb-uri", "http://x"], &[]),
            "config key `mongodbUri` (from --mongodb-uri): must start with mongodb:// or mongodb+srv://"
        );
        assert!(
            load_err(&["--log-level", "loud=="], &[])
                .starts_with("config key `logLevel` (from --log-level)")
        );
    }

    #[test]
    fn unreadable_or_malformed_files_name_the_path() {
        let msg = load_err(&["--config", "/nonexistent/distcron.json"], &[]);
        assert!(
            msg.starts_with("config file /nonexistent/distcron.json: cannot be read"),
            "{msg}"
        );
        let file = temp_file("{ nope");
        let msg = load_err(&["--config", file.path().to_str().unwrap()], &[]);
        assert!(msg.contains("is not valid JSON"), "{msg}");
        let file = temp_file("[1]");
        let msg = load_err(&["--config", file.path().to_str().unwrap()], &[]);
        assert!(
            msg.ends_with("must hold a JSON object of settings"),
            "{msg}"
        );
    }

    #[test]
    fn a_misfire_window_longer_than_claim_retention_can_guard_is_refused() {
        let msg = load_err(&["--claim-retention-secs", "60"], &[]);
        assert!(
            msg.contains("misfireWindowSecs") && msg.contains("at most 30 s"),
            "{msg}"
        );
        let ok = load(
            Role::Worker,
            &args(&[
                "--claim-retention-secs",
                "60",
                "--misfire-window-secs",
                "30",
            ]),
            &env(&[]),
        );
        assert!(ok.is_ok(), "30 s fits 60 s of retention");
    }

    #[test]
    fn a_bad_notify_section_names_the_key_and_what_is_wrong() {
        let e = load_err(
            &[],
            &[(
                "DISTCRON_NOTIFY",
                r#"{"rules":[{"target":"x","on":["failed"]}]}"#,
            )],
        );
        assert!(
            e.starts_with("config key `notify` (from DISTCRON_NOTIFY): rules: no target named 'x'"),
            "{e}"
        );
        let e = load_err(&[], &[("DISTCRON_NOTIFY", "nope")]);
        assert!(e.contains("'nope' is not a JSON object"), "{e}");
        let e = load_err(
            &[],
            &[("DISTCRON_NOTIFY", r#"{"targets":{"a":{"type":"pager"}}}"#)],
        );
        assert!(e.contains("notify") && e.contains("pager"), "{e}");
    }

    #[test]
    fn flag_usage_errors() {
        assert_eq!(load_err(&["--listen"], &[]), "--listen needs a value");
        assert!(load_err(&["stray"], &[]).starts_with("unexpected argument 'stray'"));
    }

    #[test]
    fn secrets_are_redacted_and_read_from_files() {
        let secret = temp_file("t0ken-from-file\n");
        let loaded = load(
            Role::Manager,
            &args(&["--admin-token-file", secret.path().to_str().unwrap()]),
            &env(&[
                ("DISTCRON_ETCD_PASSWORD", "etcd-pw"),
                ("DISTCRON_MONGODB_URI", "mongodb://u:mongo-pw@h:1/?x=1"),
                (
                    "DISTCRON_NOTIFY",
                    r#"{"targets":{"s":{"type":"webhook","url":"https://hooks.example.com/services/hook-pw","headers":{"X-Key":"key-pw"}}}}"#,
                ),
            ]),
        )
        .unwrap();
        assert_eq!(loaded.config.admin_token, "t0ken-from-file");
        let shown = serde_json::to_string(&loaded.config.redacted()).unwrap();
        assert!(shown.contains("https://hooks.example.com/***"), "{shown}");
        for secret in [
            "t0ken-from-file",
            "etcd-pw",
            "mongo-pw",
            "hook-pw",
            "key-pw",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("mongodb://u:***@h:1/?x=1"), "{shown}");
    }

    #[test]
    fn auth_off_only_on_loopback() {
        assert!(
            load(
                Role::Manager,
                &args(&["--auth-required", "false"]),
                &env(&[])
            )
            .is_ok()
        );
        assert_eq!(
            load_err(
                &["--auth-required", "false", "--listen", "0.0.0.0:8070"],
                &[]
            ),
            "config key `authRequired` (from --auth-required): may be false only on a loopback listen address, not 0.0.0.0:8070"
        );
        assert!(load_err(&["--worker-id", "a b"], &[]).starts_with("config key `workerId`"));
        assert!(load_err(&["--log-format", "xml"], &[]).ends_with("'xml' is not text or json"));
        assert!(load_err(&["--trusted-proxies", "nope"], &[]).contains("not an IP address"));
    }

    #[test]
    fn shipped_config_files_load() {
        for (role, file) in [
            (Role::Standalone, "config/standalone.json"),
            (Role::Manager, "config/manager.json"),
            (Role::Worker, "config/worker.json"),
        ] {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/").to_string() + file;
            load(role, &args(&["--config", &path]), &env(&[]))
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
}
