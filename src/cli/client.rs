//! The command-line client's HTTP side: one request to the manager's API,
//! its envelope unwrapped, and every failure mapped to an exit code.

use std::time::Duration;

use serde_json::Value;

use super::CliError;

/// Exit codes of the client commands (documented in docs/cli.md).
pub const EXIT_REFUSED: i32 = 1;
pub const EXIT_NOT_FOUND: i32 = 3;
pub const EXIT_CREDENTIALS: i32 = 4;
pub const EXIT_UNREACHABLE: i32 = 5;

/// The longest a request waits for its answer (a live tail waits longer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Client {
    base: String,
    token: String,
    http: awc::Client,
}

/// The exit code for an HTTP status the API refused with. Pure.
pub fn exit_code_for(status: u16) -> i32 {
    match status {
        401 | 403 => EXIT_CREDENTIALS,
        404 => EXIT_NOT_FOUND,
        _ => EXIT_REFUSED,
    }
}

/// The message of an error envelope, or the body itself.
fn message_of(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("msg").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}

impl Client {
    pub fn new(base: &str, token: &str) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: awc::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .disable_redirects()
                .finish(),
        }
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> CliError {
        CliError {
            code: EXIT_UNREACHABLE,
            message: format!("cannot reach {}: {e}", self.base),
        }
    }

    fn request(&self, method: awc::http::Method, path: &str) -> awc::ClientRequest {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        req
    }

    async fn answer(
        &self,
        sent: Result<
            awc::ClientResponse<
                impl futures_util::Stream<
                    Item = Result<actix_web::web::Bytes, awc::error::PayloadError>,
                > + Unpin,
            >,
            awc::error::SendRequestError,
        >,
    ) -> Result<Value, CliError> {
        let mut response = sent.map_err(|e| self.unreachable(e))?;
        let body = response
            .body()
            .limit(256 << 20)
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            return Err(CliError {
                code: exit_code_for(status),
                message: format!("{} ({status})", message_of(&body)),
            });
        }
        let envelope: Value = serde_json::from_slice(&body).map_err(|e| CliError {
            code: EXIT_REFUSED,
            message: format!("the server's answer is not JSON: {e}"),
        })?;
        Ok(envelope.get("data").cloned().unwrap_or(Value::Null))
    }

    /// `GET path` (with its query string): the envelope's `data`.
    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        let sent = self.request(awc::http::Method::GET, path).send().await;
        self.answer(sent).await
    }

    /// `POST path` with a JSON body: the envelope's `data`.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        let sent = self
            .request(awc::http::Method::POST, path)
            .send_json(body)
            .await;
        self.answer(sent).await
    }

    /// `GET path` as a server-sent event stream: `on_event(name, data)` for
    /// each event until the stream ends.
    pub async fn events(
        &self,
        path: &str,
        mut on_event: impl FnMut(&str, &Value),
    ) -> Result<(), CliError> {
        use futures_util::StreamExt;
        let mut response = self
            .http
            .request(awc::http::Method::GET, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(24 * 3600))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let body = response.body().await.unwrap_or_default();
            return Err(CliError {
                code: exit_code_for(status),
                message: format!("{} ({status})", message_of(&body)),
            });
        }
        let mut pending = String::new();
        while let Some(chunk) = response.next().await {
            let chunk = chunk.map_err(|e| self.unreachable(e))?;
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find("\n\n") {
                let event: String = pending.drain(..end + 2).collect();
                if let Some((name, data)) = parse_event(&event) {
                    on_event(&name, &data);
                }
            }
        }
        Ok(())
    }
}

/// One server-sent event (`event: NAME`, `data: JSON`). Pure.
pub fn parse_event(text: &str) -> Option<(String, Value)> {
    let mut name = "message".to_string();
    let mut data = String::new();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("event:") {
            name = n.trim().to_string();
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.trim_start());
        }
    }
    Some((name, serde_json::from_str(&data).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_documented_exit_codes() {
        for (status, code) in [(400, 1), (401, 4), (403, 4), (404, 3), (500, 1), (503, 1)] {
            assert_eq!(exit_code_for(status), code, "{status}");
        }
    }

    #[test]
    fn events_parse_name_and_data() {
        assert_eq!(
            parse_event("event: output\ndata: {\"text\":\"hi\\n\"}\n\n"),
            Some(("output".into(), serde_json::json!({"text": "hi\n"})))
        );
        assert_eq!(parse_event(": keep-alive\n\n"), None);
    }

    #[test]
    fn error_messages_come_from_the_envelope() {
        assert_eq!(
            message_of(br#"{"errno":-1,"msg":"job x not found","data":null}"#),
            "job x not found"
        );
        assert_eq!(message_of(b"Bad Gateway\n"), "Bad Gateway");
    }
}
