//! The one middleware every request passes: Host allowlist, authentication,
//! browser defences (Origin, CSRF, form bodies), the permission table,
//! security headers, and the audit record of every mutating or refused
//! request.
//!
//! Order matters and is fixed here: a foreign Host is refused before
//! anything is read; credentials are checked before the route's permission,
//! so an anonymous request learns nothing but "401"; the browser checks run
//! before the handler, so a refused request changes nothing.

use std::net::IpAddr;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, ResponseError, web};

use super::{ApiError, AppState};
use crate::audit::AuditRecord;
use crate::auth::permissions::{Decision, decide, methods_for};
use crate::auth::sessions::{COOKIE, CSRF_HEADER, Sessions};
use crate::auth::throttle::LoginThrottle;
use crate::auth::tokens::TokenVerifier;
use crate::auth::{Principal, Role, rule_for};

/// The security settings of one HTTP server.
pub struct Security {
    /// When false (loopback only, refused elsewhere by the config check),
    /// every request acts as an anonymous admin.
    pub required: bool,
    pub tokens: TokenVerifier,
    pub sessions: Sessions,
    /// Host names (no port) a request may address; empty allows any.
    pub allowed_hosts: Vec<String>,
    /// Origins besides the server's own that may send mutating requests.
    pub allowed_origins: Vec<String>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    pub metrics_public: bool,
    /// Served over TLS: the session cookie is `Secure`.
    pub tls: bool,
    pub login_throttle: LoginThrottle,
}

impl Default for Security {
    /// Authentication on, loopback host names only, no tokens yet.
    fn default() -> Security {
        Security {
            required: true,
            tokens: TokenVerifier::new(None),
            sessions: Sessions::new(Duration::from_secs(3600)),
            allowed_hosts: loopback_hosts(),
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            metrics_public: false,
            tls: false,
            login_throttle: LoginThrottle::default(),
        }
    }
}

impl Security {
    /// From the configuration (already validated by the loader).
    pub fn from_config(config: &crate::config::Config) -> Security {
        let mut allowed_hosts: Vec<String> =
            config.allowed_hosts.iter().map(|h| host_name(h)).collect();
        if allowed_hosts.is_empty() {
            allowed_hosts = loopback_hosts();
            if let Ok(addr) = config.listen.parse::<std::net::SocketAddr>()
                && !addr.ip().is_unspecified()
            {
                allowed_hosts.push(host_name(&addr.to_string()));
            }
        }
        Security {
            required: config.auth_required,
            tokens: TokenVerifier::new(Some(&config.admin_token)),
            sessions: Sessions::new(Duration::from_secs(config.session_idle_secs)),
            allowed_hosts,
            allowed_origins: config.allowed_origins.clone(),
            trusted_proxies: config
                .trusted_proxies
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect(),
            metrics_public: config.metrics_public,
            tls: !config.tls_cert_file.is_empty(),
            login_throttle: LoginThrottle::default(),
        }
    }
}

/// The host names that always mean this machine.
pub fn loopback_hosts() -> Vec<String> {
    ["localhost", "127.0.0.1", "[::1]"]
        .map(String::from)
        .to_vec()
}

/// The host name of a `Host` header or allowlist entry: lowercase, port
/// removed, IPv6 kept in brackets.
pub fn host_name(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => host[..=end].to_string(),
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_string(),
        _ => host,
    }
}

/// The `host[:port]` part of an origin (`http://a:1` -> `a:1`).
fn origin_authority(origin: &str) -> Option<&str> {
    let (_, rest) = origin.split_once("://")?;
    Some(rest.trim_end_matches('/'))
}

/// Whether a mutating request's browser origin may act: its own origin (the
/// `Host` it addressed) or one configured. No `Origin` is a non-browser
/// client, unless fetch metadata says the request crossed sites.
pub fn origin_allowed(
    origin: Option<&str>,
    host: Option<&str>,
    fetch_site: Option<&str>,
    allowed: &[String],
) -> Result<(), String> {
    let Some(origin) = origin else {
        return match fetch_site {
            Some("cross-site" | "same-site") => {
                Err("a cross-site request without an Origin header".into())
            }
            _ => Ok(()),
        };
    };
    if allowed.iter().any(|a| a.trim_end_matches('/') == origin) {
        return Ok(());
    }
    let own = host.is_some_and(|h| {
        origin_authority(origin).is_some_and(|a| a.eq_ignore_ascii_case(h.trim()))
    });
    if own {
        Ok(())
    } else {
        Err(format!(
            "origin '{origin}' may not send this request (allowedOrigins)"
        ))
    }
}

/// The client address: the peer, or, when the peer is a trusted proxy, the
/// nearest address in `X-Forwarded-For` that is not one.
pub fn source_address(peer: Option<IpAddr>, forwarded: Option<&str>, trusted: &[IpAddr]) -> String {
    let Some(peer) = peer else {
        return String::new();
    };
    if !trusted.contains(&peer) {
        return peer.to_string();
    }
    forwarded
        .into_iter()
        .flat_map(|f| f.rsplit(','))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .find(|a| !trusted.contains(a))
        .unwrap_or(peer)
        .to_string()
}

/// What a handler adds to its request's audit record.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    pub job: Option<String>,
    pub changes: std::collections::BTreeMap<String, serde_json::Value>,
    /// The identity that signed in (login has no principal before it).
    pub actor: Option<Principal>,
}

/// Attach audit facts to the request (merged with what is there).
pub fn note(req: &HttpRequest, f: impl FnOnce(&mut AuditNote)) {
    let mut ext = req.extensions_mut();
    if ext.get::<AuditNote>().is_none() {
        ext.insert(AuditNote::default());
    }
    if let Some(note) = ext.get_mut::<AuditNote>() {
        f(note);
    }
}

/// The principal the guard authenticated. Every handler behind a
/// non-public route has one.
/// The client's address as the audit log records it (a forwarded address
/// only from a trusted proxy).
#[derive(Debug, Clone)]
pub struct SourceAddress(pub String);

pub fn source(req: &HttpRequest) -> String {
    req.extensions()
        .get::<SourceAddress>()
        .map(|s| s.0.clone())
        .unwrap_or_default()
}

pub fn principal(req: &HttpRequest) -> Principal {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(anonymous)
}

/// Who acts when authentication is off (loopback only).
fn anonymous() -> Principal {
    Principal {
        id: "anonymous".into(),
        name: "anonymous".into(),
        role: Role::Admin,
        group: None,
    }
}

/// How a request authenticated.
enum Credentials {
    None,
    Bearer(Principal),
    Cookie {
        principal: Principal,
        csrf: String,
    },
    /// Credentials were sent but are not valid.
    Invalid(&'static str),
}

fn header(req: &ServiceRequest, name: impl header::AsHeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn authenticate(req: &ServiceRequest, state: &AppState) -> Result<Credentials, ApiError> {
    let security = &state.security;
    let now = (state.clock)().timestamp_millis();
    if let Some(auth) = header(req, header::AUTHORIZATION) {
        let Some(token) = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
        else {
            return Ok(Credentials::Invalid(
                "Authorization must be 'Bearer <token>'",
            ));
        };
        return Ok(
            match security
                .tokens
                .verify(&*state.coord, token.trim(), now)
                .await?
            {
                Some(p) => Credentials::Bearer(p),
                None => Credentials::Invalid("the token is unknown, expired or revoked"),
            },
        );
    }
    if let Some(cookie) = req.cookie(COOKIE) {
        return Ok(
            match security
                .sessions
                .find(&*state.coord, cookie.value())
                .await?
            {
                Some(s) => Credentials::Cookie {
                    principal: s.principal,
                    csrf: s.csrf,
                },
                None => Credentials::Invalid("the session has ended; sign in again"),
            },
        );
    }
    Ok(Credentials::None)
}

fn is_mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Form-like bodies are what a cross-site HTML form can send.
fn is_form_body(req: &ServiceRequest) -> bool {
    header(req, header::CONTENT_TYPE).is_some_and(|ct| {
        let ct = ct.to_ascii_lowercase();
        ct.starts_with("application/x-www-form-urlencoded")
            || ct.starts_with("multipart/form-data")
            || ct.starts_with("text/plain")
    })
}

/// The middleware.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("the app registers its state")
        .clone();
    let security = &state.security;
    let method = req.method().clone();
    let pattern = req.match_pattern();
    let rule = pattern
        .as_deref()
        .and_then(|p| rule_for(method.as_str(), p));
    let console_file = rule.is_none()
        && matches!(method, Method::GET | Method::HEAD)
        && super::webroot::is_console_path(req.path());
    let source = source_address(
        req.peer_addr().map(|a| a.ip()),
        header(&req, "x-forwarded-for"),
        &security.trusted_proxies,
    );
    let action = rule
        .and_then(|r| r.action)
        .map(String::from)
        .unwrap_or_else(|| format!("read {}", req.path()));

    let mut actor: Option<Principal> = None;
    let refusal: Option<ApiError> = 'check: {
        if let Some(host) = header(&req, header::HOST)
            && !security.allowed_hosts.is_empty()
            && !security.allowed_hosts.contains(&host_name(host))
        {
            break 'check Some(ApiError::Forbidden(format!(
                "host '{host}' is not served here (allowedHosts)"
            )));
        }
        if is_mutating(&method)
            && let Err(reason) = origin_allowed(
                header(&req, header::ORIGIN),
                header(&req, header::HOST),
                header(&req, "sec-fetch-site"),
                &security.allowed_origins,
            )
        {
            break 'check Some(ApiError::Forbidden(reason));
        }
        // A known path asked with a method it does not serve.
        if let (None, Some(pattern)) = (rule, pattern.as_deref()) {
            let allow = methods_for(pattern);
            if !allow.is_empty() {
                break 'check Some(ApiError::MethodNotAllowed {
                    method: method.to_string(),
                    path: req.path().to_string(),
                    allow: allow.join(", "),
                });
            }
        }
        if console_file {
            break 'check None;
        }
        if !security.required {
            actor = Some(anonymous());
            break 'check None;
        }
        let credentials = match authenticate(&req, &state).await {
            Ok(c) => c,
            Err(e) => break 'check Some(e),
        };
        let role = match &credentials {
            Credentials::Bearer(p) | Credentials::Cookie { principal: p, .. } => {
                actor = Some(p.clone());
                Some(p.role)
            }
            Credentials::None => None,
            Credentials::Invalid(why) => {
                // A public route still answers a request with stale
                // credentials (a sign-in page with an old cookie).
                if rule.is_some_and(|r| {
                    decide(r.permission, None, security.metrics_public) == Decision::Allow
                }) {
                    break 'check None;
                }
                break 'check Some(ApiError::Unauthorized((*why).into()));
            }
        };
        if let Credentials::Cookie { csrf, .. } = &credentials
            && is_mutating(&method)
        {
            if is_form_body(&req) {
                break 'check Some(ApiError::Forbidden(
                    "a form body is accepted only with a Bearer token".into(),
                ));
            }
            let sent = header(&req, CSRF_HEADER).unwrap_or("");
            if !crate::auth::constant_time_eq(sent.as_bytes(), csrf.as_bytes()) {
                break 'check Some(ApiError::Forbidden(format!(
                    "the {CSRF_HEADER} header is missing or wrong"
                )));
            }
        }
        match rule {
            Some(rule) => match decide(rule.permission, role, security.metrics_public) {
                Decision::Allow => None,
                Decision::Unauthenticated => Some(ApiError::Unauthorized(
                    "credentials are required: send 'Authorization: Bearer <token>' or sign in"
                        .into(),
                )),
                Decision::Forbidden => Some(ApiError::Forbidden(format!(
                    "role {} may not {} {}",
                    role.map_or("none", Role::as_str),
                    method,
                    rule.path
                ))),
            },
            // A registered route missing from the permission table.
            None if pattern.is_some() => Some(ApiError::Forbidden(format!(
                "{method} {} has no permission entry; refused",
                req.path()
            ))),
            // No such route: let the router answer 404, but only to a
            // client with credentials.
            None if role.is_some() => None,
            None => Some(ApiError::Unauthorized(
                "credentials are required: send 'Authorization: Bearer <token>' or sign in".into(),
            )),
        }
    };

    if let Some(p) = &actor {
        req.extensions_mut().insert(p.clone());
    }
    req.extensions_mut().insert(SourceAddress(source.clone()));
    let mut response = match refusal {
        Some(error) => {
            let response = error.error_response();
            req.into_response(response)
        }
        None => next.call(req).await?.map_into_boxed_body(),
    };

    let status = response.status();
    let audited =
        is_mutating(&method) || matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
    if audited && let Some(audit) = &state.audit {
        audit.record(audit_record(&response, &state, actor, action, source));
    }
    add_headers(&mut response, console_file);
    Ok(response)
}

fn audit_record(
    response: &ServiceResponse<BoxBody>,
    state: &AppState,
    actor: Option<Principal>,
    mut action: String,
    source: String,
) -> AuditRecord {
    let req = response.request();
    let note = req
        .extensions()
        .get::<AuditNote>()
        .cloned()
        .unwrap_or_default();
    let actor = note.actor.or(actor);
    let status = response.status();
    let outcome = match status.as_u16() {
        200..=399 => "ok",
        401 | 403 => "refused",
        _ => "failed",
    };
    if action == "auth.login" && outcome != "ok" {
        action = "auth.login_failed".into();
    }
    let reason = response
        .response()
        .error()
        .map(|e| e.to_string())
        .unwrap_or_default();
    AuditRecord {
        id: crate::auth::random_hex(12),
        time: (state.clock)().timestamp_millis(),
        actor_id: actor.as_ref().map(|a| a.id.clone()).unwrap_or_default(),
        actor_name: actor.as_ref().map(|a| a.name.clone()).unwrap_or_default(),
        actor_role: actor.as_ref().map(|a| a.role),
        action,
        method: req.method().to_string(),
        path: req.path().to_string(),
        job: note.job,
        source,
        status: status.as_u16(),
        outcome: outcome.into(),
        reason,
        changes: note.changes,
    }
}

/// Headers on every response: no framing, no sniffing, no referrer, and
/// API answers never cached.
fn add_headers(response: &mut ServiceResponse<BoxBody>, console_file: bool) {
    let headers = response.headers_mut();
    let set = |h: &mut header::HeaderMap, name: &'static str, value: &'static str| {
        h.insert(
            header::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    };
    set(
        headers,
        "content-security-policy",
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    );
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "referrer-policy", "no-referrer");
    set(headers, "x-frame-options", "DENY");
    if !console_file {
        set(headers, "cache-control", "no-store");
    }
}

/// A `Set-Cookie` for a new session, or one that clears it.
pub fn session_cookie(
    value: &str,
    max_age: Option<Duration>,
    tls: bool,
) -> actix_web::cookie::Cookie<'static> {
    let mut cookie = actix_web::cookie::Cookie::build(COOKIE, value.to_string())
        .path("/")
        .http_only(true)
        .same_site(actix_web::cookie::SameSite::Strict)
        .secure(tls)
        .finish();
    match max_age {
        Some(age) => cookie.set_max_age(actix_web::cookie::time::Duration::seconds(
            age.as_secs() as i64
        )),
        None => cookie.make_removal(),
    }
    cookie
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        for (input, want) in [
            ("127.0.0.1:8070", "127.0.0.1"),
            ("LocalHost", "localhost"),
            ("[::1]:8070", "[::1]"),
            ("[::1]", "[::1]"),
            ("example.com:443", "example.com"),
        ] {
            assert_eq!(host_name(input), want, "{input}");
        }
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://ops.example.com".to_string()];
        let host = Some("127.0.0.1:8070");
        let check = |origin, site| origin_allowed(origin, host, site, &allowed).is_ok();
        assert!(check(None, None), "curl sends no Origin");
        assert!(check(Some("http://127.0.0.1:8070"), Some("same-origin")));
        assert!(check(Some("https://ops.example.com"), Some("cross-site")));
        assert!(!check(Some("http://127.0.0.1:9999"), Some("same-site")));
        assert!(!check(Some("null"), None));
        assert!(!check(None, Some("cross-site")));
        assert!(!check(Some("http://evil.example"), None));
    }

    #[test]
    fn forwarded_addresses_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let xff = Some("198.51.100.1, 192.0.2.7");
        assert_eq!(source_address(Some(client), xff, &[proxy]), "192.0.2.7");
        assert_eq!(source_address(Some(proxy), xff, &[proxy]), "192.0.2.7");
        assert_eq!(source_address(Some(proxy), None, &[proxy]), "10.0.0.1");
        assert_eq!(source_address(None, xff, &[proxy]), "");
    }
}
