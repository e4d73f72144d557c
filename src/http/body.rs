//! Request bodies: read with a size limit, and parsed as a form or as JSON
//! by content type, so old clients (forms) and new ones (JSON) share
//! handlers and every failure gets the common error shape.

use actix_web::{HttpRequest, web};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::{ApiError, MAX_BODY_BYTES};

/// The whole body, or 413 once it passes [`MAX_BODY_BYTES`].
pub async fn read(payload: web::Payload) -> Result<web::BytesMut, ApiError> {
    read_at_most(payload, MAX_BODY_BYTES).await
}

/// The whole body, or 413 once it passes `limit` bytes.
pub async fn read_at_most(
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

pub fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// A form (`a=1&b=2`) or, with a JSON content type, a JSON object.
pub fn parse<T: DeserializeOwned>(req: &HttpRequest, body: &[u8]) -> Result<T, ApiError> {
    if is_json(req) {
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("JSON body: {e}")))
    } else {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::BadRequest("form body: not UTF-8".into()))?;
        web::Query::<T>::from_query(text)
            .map(web::Query::into_inner)
            .map_err(|e| ApiError::BadRequest(format!("form body: {e}")))
    }
}

/// The query string as a form, for requests that send no body.
pub fn parse_query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::BadRequest(format!("form body: {e}")))
}
