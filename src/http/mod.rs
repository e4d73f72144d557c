//! The HTTP API: one app builder used by `distcron-manager`, by
//! `distcron standalone` and by the HTTP tests, so all three serve exactly
//! the same routes with the same error handling.
//!
//! Every response uses the old system's envelope
//! `{"errno": 0 | -1, "msg": "success" | <error>, "data": ...}` together with
//! a real HTTP status (see [`error`]).

mod body;
pub mod error;
pub mod guard;
pub mod job_index;
mod routes;
pub mod tail;
pub mod webroot;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpServer, web};
use chrono::{DateTime, Utc};

use crate::coord::Coordinator;
use crate::runlog::RunLog;

pub use error::{ApiError, Envelope};

/// Largest request body: a job with a 64 KiB command fits many times over;
/// anything bigger is a mistake or an attack and gets 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A source of "now", injected so tests control time.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What every handler can reach. The manager keeps no state of its own:
/// everything lives in the coordinator and the run log, so any number of
/// managers serve the same jobs and runs.
#[derive(Clone)]
pub struct AppState {
    pub clock: Clock,
    pub coord: Arc<dyn Coordinator>,
    pub run_log: Arc<dyn RunLog>,
    /// Requests served by this process, by route pattern and status.
    pub requests: Arc<RequestCounts>,
    /// Job definitions, following `jobs/`, for fast listing.
    pub jobs: Arc<job_index::JobIndex>,
    /// The console's folder; `None` serves the API alone.
    pub webroot: Option<std::path::PathBuf>,
    /// Authentication, roles and browser defences (see [`guard`]).
    pub security: Arc<guard::Security>,
    /// Where audit records go; `None` keeps none (unit tests of one route).
    pub audit: Option<crate::audit::AuditWriter>,
    /// The run log's audit side, for `GET /audit`.
    pub audit_store: Arc<dyn crate::audit::AuditStore>,
    /// Most jobs the cluster may hold (`maxJobs`).
    pub max_jobs: usize,
    /// The longest misfire window the cluster's tick claims can guard.
    pub max_misfire_window: std::time::Duration,
    /// Notification targets and rules (`notify`), to check jobs' rules.
    pub notify: Arc<crate::notify::NotifyConfig>,
    /// This process's notifier (`POST /notify/test`); `None` without one.
    pub notifier: Option<actix::Addr<crate::notify::notifier::Notifier>>,
    /// Runs in progress in this process (standalone), followed directly
    /// by `GET /run/tail`; others are followed through their worker.
    pub local_runs: Option<crate::runner::RunningRuns>,
}

/// HTTP requests served, by (route pattern, status), for `/metrics`.
#[derive(Default)]
pub struct RequestCounts(std::sync::Mutex<std::collections::BTreeMap<(String, u16), u64>>);

impl RequestCounts {
    fn record(&self, route: String, status: u16) {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry((route, status)).or_default() += 1;
    }

    pub fn snapshot(&self) -> Vec<((String, u16), u64)> {
        let counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

impl AppState {
    /// Must be called inside a tokio runtime: it starts following `jobs/`.
    pub fn new(coord: Arc<dyn Coordinator>, run_log: Arc<dyn RunLog>) -> AppState {
        let audit_store: Arc<dyn crate::audit::AuditStore> = run_log.clone();
        AppState {
            clock: Arc::new(Utc::now),
            jobs: job_index::JobIndex::follow(coord.clone()),
            coord,
            audit: Some(crate::audit::AuditWriter::start(audit_store.clone())),
            audit_store,
            run_log,
            requests: Arc::default(),
            webroot: None,
            security: Arc::default(),
            max_jobs: crate::job::DEFAULT_MAX_JOBS,
            max_misfire_window: crate::coord::claims::ClaimPolicy::default().max_misfire_window(),
            notify: Default::default(),
            notifier: None,
            local_runs: None,
        }
    }

    /// Apply the security settings and limits of `config`.
    pub fn with_config(mut self, config: &crate::config::Config) -> AppState {
        self.security = Arc::new(guard::Security::from_config(config));
        self.max_jobs = config.max_jobs as usize;
        self.max_misfire_window = crate::coord::claims::ClaimPolicy {
            retention: std::time::Duration::from_secs(config.claim_retention_secs),
            ..Default::default()
        }
        .max_misfire_window();
        self.notify = Arc::new(config.notify.clone());
        self
    }

    /// Start this process's notifier (when targets are configured), for
    /// `POST /notify/test` and the records this process writes. Must be
    /// called inside an actix system.
    pub fn with_notifier(mut self, sender: &str) -> AppState {
        use actix::Actor;
        if self.notify.targets.is_empty() {
            return self;
        }
        let notifier = crate::notify::notifier::Notifier::new(
            (*self.notify).clone(),
            self.run_log.clone(),
            Some(self.coord.clone()),
            self.jobs.lookup(),
            Arc::new(crate::clock::SystemClock),
            sender,
        );
        self.notifier = Some(notifier.start());
        self
    }

    /// Serve the console from `root` (empty: no console). Says so in the
    /// log when the folder lacks it, and `/` then says how to install it.
    pub fn with_webroot(mut self, root: &str) -> AppState {
        if root.is_empty() {
            return self;
        }
        let root = std::path::PathBuf::from(root);
        if let Some(missing) = webroot::missing_part(&root) {
            tracing::warn!(%missing, "console not installed: run `npm ci` in webroot/");
        }
        self.webroot = Some(root);
        self
    }
}

/// The application: routes, shared state and the extractor error handlers
/// that turn malformed requests into the common error shape.
pub fn app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let requests = state.requests.clone();
    let webroot = state.webroot.clone();
    App::new()
        // Inner: every request passes the guard. Outer: count every answer,
        // refusals included.
        .wrap(actix_web::middleware::from_fn(guard::guard))
        .wrap_fn(move |req, srv| {
            let requests = requests.clone();
            let response = actix_web::dev::Service::call(srv, req);
            async move {
                let response = response.await?;
                let route = response
                    .request()
                    .match_pattern()
                    .unwrap_or_else(|| "unmatched".into());
                requests.record(route, response.status().as_u16());
                Ok(response)
            }
        })
        .app_data(web::Data::new(state))
        .app_data(error::query_config())
        .app_data(error::form_config())
        .app_data(error::json_config())
        .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .configure(routes::configure)
        .configure(|cfg| {
            if let Some(root) = &webroot {
                webroot::configure(cfg, root);
            }
        })
        .default_service(web::to(routes::not_found))
}

/// The TLS settings of `tlsCertFile` and `tlsKeyFile` (PEM), if set.
pub fn tls_config(config: &crate::config::Config) -> std::io::Result<Option<rustls::ServerConfig>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    if config.tls_cert_file.is_empty() {
        return Ok(None);
    }
    let bad = |key: &str, e: &dyn std::fmt::Display| std::io::Error::other(format!("{key}: {e}"));
    let chain = CertificateDer::pem_file_iter(&config.tls_cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad("tlsCertFile", &e))?;
    if chain.is_empty() {
        return Err(bad("tlsCertFile", &"holds no certificate"));
    }
    let key =
        PrivateKeyDer::from_pem_file(&config.tls_key_file).map_err(|e| bad("tlsKeyFile", &e))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("tlsCertFile", &e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map(Some)
        .map_err(|e| bad("tlsKeyFile", &e))
}

/// Serve the app on `listener` (over TLS with `tls`) until `shutdown`
/// resolves. The caller owns the listener (tests bind port 0) and the
/// shutdown signal.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    tls: Option<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let server = HttpServer::new(move || app(state.clone())).disable_signals();
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    }
    .run();
    let handle = server.handle();
    actix_rt::spawn(async move {
        shutdown.await;
        handle.stop(true).await;
    });
    server.await
}
