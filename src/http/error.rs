//! One error type for the whole API, one table from error to HTTP status, and
//! the response envelope shared by successes and errors.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, error::JsonPayloadError, web};
use serde::Serialize;

/// The old system's response envelope.
#[derive(Debug, Serialize)]
pub struct Envelope<T: Serialize> {
    pub errno: i32,
    pub msg: String,
    pub data: T,
}

/// A success response: `errno` 0, `msg` "success".
pub fn ok<T: Serialize>(data: T) -> HttpResponse {
    HttpResponse::Ok().json(Envelope {
        errno: 0,
        msg: "success".into(),
        data,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is missing or invalid; the text names the field.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// No valid credentials (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials without the right (403), or a refused browser request.
    #[error("{0}")]
    Forbidden(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// Too many failed sign-ins from this address; try after `retry_after` s.
    #[error("too many failed sign-ins from this address; try again in {retry_after} s")]
    TooManyRequests { retry_after: u64 },
    /// The path exists, but not for this method; `allow` lists its methods.
    #[error("{method} is not served on {path}; use {allow}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allow: String,
    },
    /// A backend (coordinator, run log) could not be reached.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::MethodNotAllowed { allow, .. } => {
                response.insert_header((actix_web::http::header::ALLOW, allow.as_str()));
            }
            ApiError::TooManyRequests { retry_after } => {
                response.insert_header((actix_web::http::header::RETRY_AFTER, *retry_after));
            }
            _ => {}
        }
        response.json(Envelope {
            errno: -1,
            msg: self.to_string(),
            data: serde_json::Value::Null,
        })
    }
}

impl From<crate::coord::CoordError> for ApiError {
    fn from(e: crate::coord::CoordError) -> ApiError {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<crate::runlog::RunLogError> for ApiError {
    fn from(e: crate::runlog::RunLogError) -> ApiError {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> ApiError {
        match e {
            crate::auth::AuthError::Invalid(m) => ApiError::BadRequest(m),
            crate::auth::AuthError::NotFound(m) => ApiError::NotFound(m),
            crate::auth::AuthError::Coord(e) => e.into(),
        }
    }
}

impl From<crate::job::JobError> for ApiError {
    fn from(e: crate::job::JobError) -> ApiError {
        ApiError::BadRequest(e.to_string())
    }
}

/// The deepest page any list serves (`skip`).
pub const MAX_SKIP: u64 = 10_000_000;
/// The latest instant a query takes: the end of year 9999, epoch ms.
pub const MAX_EPOCH_MS: i64 = 253_402_300_799_999;

/// `value` of query field `field` if it lies in `min..=max`; a 400 naming
/// the field and the range otherwise.
pub fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T, ApiError> {
    if value < min || value > max {
        return Err(ApiError::BadRequest(format!(
            "{field}: must be from {min} to {max}"
        )));
    }
    Ok(value)
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|err, _| ApiError::BadRequest(format!("query string: {err}")).into())
}

pub fn form_config() -> web::FormConfig {
    web::FormConfig::default()
        .limit(super::MAX_BODY_BYTES)
        .error_handler(|err, _| match err {
            actix_web::error::UrlencodedError::Overflow { limit, .. } => {
                ApiError::PayloadTooLarge { limit }.into()
            }
            other => ApiError::BadRequest(format!("form body: {other}")).into(),
        })
}

pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(super::MAX_BODY_BYTES)
        .error_handler(|err, _| match err {
            JsonPayloadError::OverflowKnownLength { limit, .. }
            | JsonPayloadError::Overflow { limit } => ApiError::PayloadTooLarge { limit }.into(),
            other => ApiError::BadRequest(format!("JSON body: {other}")).into(),
        })
}
