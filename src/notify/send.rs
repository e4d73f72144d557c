//! One delivery attempt to one target: a web hook POST (awc, actix's own
//! HTTP client) or an email over SMTP (lettre). Runs on an actix arbiter.

use std::time::Duration;

use super::{EmailTarget, Message, Target, WebhookTarget};

/// Time allowed for one attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an attempt failed, and whether trying again could help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    pub message: String,
    /// The receiver refused it for good (a 4xx answer, a rejected address).
    pub permanent: bool,
}

impl SendError {
    fn retry(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
            permanent: false,
        }
    }

    fn refused(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
            permanent: true,
        }
    }
}

/// The first line of a secret file.
pub fn read_secret(path: &str) -> Result<String, SendError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SendError::refused(format!("cannot read {path}: {e}")))?;
    let line = text.lines().next().unwrap_or("").trim().to_string();
    if line.is_empty() {
        return Err(SendError::refused(format!("{path} is empty")));
    }
    Ok(line)
}

/// `sha256=<hex>` of HMAC-SHA256(`secret`, `body`).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret)
        .expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Deliver `message` to `target` once. `delivery_id` names this delivery to
/// the receiver (`X-Distcron-Delivery`), the same on every retry, so a
/// receiver can drop a retry of what it already took.
pub async fn send(target: &Target, message: &Message, delivery_id: &str) -> Result<(), SendError> {
    match target {
        Target::Webhook(hook) => post(hook, message, delivery_id).await,
        Target::Email(mail) => email(mail, message).await,
    }
}

async fn post(hook: &WebhookTarget, message: &Message, delivery_id: &str) -> Result<(), SendError> {
    let body = serde_json::to_vec(message).map_err(|e| SendError::refused(e.to_string()))?;
    let client = awc::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .disable_redirects()
        .finish();
    let mut request = client
        .post(&hook.url)
        .insert_header(("Content-Type", "application/json"))
        .insert_header((
            "User-Agent",
            concat!("distcron/", env!("CARGO_PKG_VERSION")),
        ))
        .insert_header(("X-Distcron-Event", message.event.as_str()))
        .insert_header(("X-Distcron-Delivery", delivery_id));
    for (name, value) in &hook.headers {
        request = request.insert_header((name.as_str(), value.as_str()));
    }
    if !hook.secret_file.is_empty() {
        let secret = read_secret(&hook.secret_file)?;
        request =
            request.insert_header(("X-Distcron-Signature", signature(secret.as_bytes(), &body)));
    }
    let response = request
        .send_body(body)
        .await
        .map_err(|e| SendError::retry(format!("POST {}: {e}", hook.url)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let message = format!("POST {} answered {status}", hook.url);
    // A 4xx says the request itself is wrong: retrying sends the same.
    // 408 and 429 are "later", like any 5xx.
    if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
        Err(SendError::refused(message))
    } else {
        Err(SendError::retry(message))
    }
}

async fn email(mail: &EmailTarget, message: &Message) -> Result<(), SendError> {
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

    let refused = |e: &dyn std::fmt::Display| SendError::refused(e.to_string());
    let mut builder = lettre::Message::builder()
        .from(mail.from.parse().map_err(|e| refused(&e))?)
        .subject(message.subject())
        .header(ContentType::TEXT_PLAIN);
    for to in &mail.to {
        builder = builder.to(to.parse().map_err(|e| refused(&e))?);
    }
    let email = builder
        .body(message.plain_text())
        .map_err(|e| refused(&e))?;
    let transport = match mail.security {
        super::SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&mail.host),
        super::SmtpSecurity::Starttls => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&mail.host)
        }
        super::SmtpSecurity::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            &mail.host,
        )),
    }
    .map_err(|e| refused(&e))?;
    let mut transport = transport.port(mail.port).timeout(Some(ATTEMPT_TIMEOUT));
    if !mail.user.is_empty() {
        let password = read_secret(&mail.password_file)?;
        transport = transport.credentials(Credentials::new(mail.user.clone(), password));
    }
    let mailer = transport.build();
    match mailer.send(email).await {
        Ok(_) => Ok(()),
        Err(e) => Err(SendError {
            message: format!("SMTP {}:{}: {e}", mail.host, mail.port),
            permanent: e.is_permanent(),
        }),
    }
}
