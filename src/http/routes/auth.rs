//! `/auth/*`: console sign-in and sign-out, who am I, and the admin's
//! token endpoints (`distcron token` does the same against the store).

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::auth::sessions::COOKIE;
use crate::auth::tokens::{self, NewToken};
use crate::auth::{Principal, users};
use crate::http::error::ok;
use crate::http::guard::{note, principal, session_cookie, source};
use crate::http::{ApiError, AppState, body};

/// Either a token or a user name and password.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    token: Option<String>,
    user: Option<String>,
    password: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SignedIn {
    #[serde(flatten)]
    principal: Principal,
    /// Send back as `X-CSRF-Token` on every mutating request.
    csrf_token: String,
}

/// `POST /auth/login` (JSON): sets the session cookie.
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = body::read(payload).await?;
    if !body::is_json(&req) {
        return Err(ApiError::BadRequest(
            "sign-in takes a JSON body: {\"token\"} or {\"user\", \"password\"}".into(),
        ));
    }
    let login: Login = body::parse(&req, &body)?;
    let source = source(&req);
    let throttle = &state.security.login_throttle;
    if let Err(wait) = throttle.check(&source, Instant::now()) {
        return Err(ApiError::TooManyRequests {
            retry_after: wait.as_secs().max(1),
        });
    }
    let now = (state.clock)().timestamp_millis();
    let found = match (&login.token, &login.user, &login.password) {
        (Some(token), None, None) => {
            state
                .security
                .tokens
                .verify(&*state.coord, token, now)
                .await?
        }
        (None, Some(user), Some(password)) => users::verify(&*state.coord, user, password).await?,
        _ => {
            return Err(ApiError::BadRequest(
                "sign-in takes {\"token\"} or {\"user\", \"password\"}".into(),
            ));
        }
    };
    let Some(principal) = found else {
        throttle.failed(&source, Instant::now());
        return Err(ApiError::Unauthorized(
            "the token, user or password is not valid".into(),
        ));
    };
    throttle.succeeded(&source);
    let session = state
        .security
        .sessions
        .create(&*state.coord, principal.clone())
        .await?;
    note(&req, |n| n.actor = Some(principal.clone()));
    let cookie = session_cookie(
        &session.cookie,
        Some(state.security.sessions.idle()),
        state.security.tls,
    );
    Ok(HttpResponse::Ok()
        .cookie(cookie)
        .json(crate::http::Envelope {
            errno: 0,
            msg: "success".into(),
            data: SignedIn {
                principal,
                csrf_token: session.session.csrf,
            },
        }))
}

/// `POST /auth/logout`: ends the session everywhere and clears the cookie.
pub async fn logout(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if let Some(cookie) = req.cookie(COOKIE) {
        state
            .security
            .sessions
            .end(&*state.coord, cookie.value())
            .await?;
    }
    let clear = session_cookie("", None, state.security.tls);
    Ok(HttpResponse::Ok()
        .cookie(clear)
        .json(crate::http::Envelope {
            errno: 0,
            msg: "success".into(),
            data: serde_json::Value::Null,
        }))
}

/// `GET /auth/me`: the signed-in identity, and the session's CSRF token
/// (a console page reloaded after sign-in gets it here).
pub async fn me(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let csrf_token = match req.cookie(COOKIE) {
        Some(cookie) => state
            .security
            .sessions
            .find(&*state.coord, cookie.value())
            .await?
            .map(|s| s.csrf)
            .unwrap_or_default(),
        None => String::new(),
    };
    Ok(ok(SignedIn {
        principal: principal(&req),
        csrf_token,
    }))
}

/// `GET /auth/tokens`: every token, without secrets.
pub async fn list_tokens(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(ok(tokens::list(&*state.coord).await?))
}

/// `POST /auth/tokens` (JSON `{"name", "role", "group"?, "expires"?}`): the
/// new token; its secret is shown only in this answer.
pub async fn create_token(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = body::read(payload).await?;
    let request: NewToken = body::parse(&req, &body)?;
    let by = principal(&req);
    let now = (state.clock)().timestamp_millis();
    let created = tokens::create(&*state.coord, &request, &by.id, now).await?;
    note(&req, |n| {
        n.changes.insert(
            "token".into(),
            serde_json::json!({"id": created.record.id, "role": created.record.role, "name": created.record.name}),
        );
    });
    Ok(ok(created))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenId {
    id: String,
}

/// `POST /auth/tokens/revoke` (`id`): the token stops working at once here
/// and within seconds on every other manager.
pub async fn revoke_token(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = body::read(payload).await?;
    let TokenId { id } = body::parse(&req, &body)?;
    let revoked = tokens::revoke(&*state.coord, &id).await?;
    state.security.tokens.forget(&id);
    note(&req, |n| {
        n.changes.insert(
            "token".into(),
            serde_json::json!({"id": id, "revoked": true}),
        );
    });
    Ok(ok(revoked))
}
