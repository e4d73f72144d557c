//! Live output: a run's output as server-sent events, while it runs.
//!
//! A worker serves its runs' output on `liveListen` (`GET /live?id=`, a
//! bearer secret of the process, registered with its address in
//! `workers/<id>`). A manager's `GET /run/tail?id=` finds the worker that
//! runs it and passes its stream through, so any manager serves any run;
//! standalone reads its own runs directly. A run already ended streams from
//! its record. Events: `output` (`{"text": ...}`, the output so far, then
//! each new chunk), then one `end` (the final status), then the stream ends.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use futures_util::Stream;
use serde::{Deserialize, Serialize};

use crate::runlog::RunRecord;
use crate::runner::RunningRuns;
use crate::runner::live::{LiveEnd, LiveOutput, decode_chunk, sse_event};

/// Most bytes of output in one event.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// A comment line this often keeps proxies from closing a quiet stream.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// How long a tail waits for the record of a run that ended before it
/// could be followed (its worker ships records in batches).
pub const RECORD_PATIENCE: Duration = Duration::from_secs(30);

/// Where a worker serves live output, as registered in `workers/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveEndpoint {
    /// `http://host:port`.
    pub url: String,
    /// The bearer secret of this worker process (never shown by the API).
    #[serde(default)]
    pub token: String,
}

type EventStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, actix_web::Error>>>>;

#[derive(Serialize)]
struct OutputEvent<'a> {
    text: &'a str,
}

/// Follow `live` from its first byte to its end.
pub fn follow(live: Arc<LiveOutput>) -> EventStream {
    struct Follower {
        live: Arc<LiveOutput>,
        progress: tokio::sync::watch::Receiver<crate::runner::live::Progress>,
        offset: usize,
        done: bool,
    }
    let progress = live.watch();
    let start = Follower {
        live,
        progress,
        offset: 0,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(start, |mut f| async move {
        if f.done {
            return None;
        }
        loop {
            let now = f.progress.borrow_and_update().clone();
            if now.len > f.offset {
                let bytes = f.live.read(f.offset, CHUNK_BYTES);
                let at_end = now.end.is_some() && f.offset + bytes.len() >= now.len;
                let (text, used) = decode_chunk(&bytes, at_end);
                if used > 0 {
                    f.offset += used;
                    let event = sse_event("output", &OutputEvent { text: &text });
                    return Some((Ok(Bytes::from(event)), f));
                }
            }
            if let Some(end) = now.end {
                f.done = true;
                return Some((Ok(Bytes::from(sse_event("end", &end))), f));
            }
            match tokio::time::timeout(KEEPALIVE, f.progress.changed()).await {
                Ok(Ok(())) => continue,
                // The run's handle went without an end: nothing more comes.
                Ok(Err(_)) => return None,
                Err(_) => return Some((Ok(Bytes::from_static(b": keepalive\n\n")), f)),
            }
        }
    }))
}

/// The events of a run that has ended, from its record.
pub fn stored(record: &RunRecord) -> EventStream {
    let mut events = Vec::new();
    let mut rest = record.output.as_str();
    while !rest.is_empty() {
        let mut cut = rest.len().min(CHUNK_BYTES);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (chunk, tail) = rest.split_at(cut);
        events.push(sse_event("output", &OutputEvent { text: chunk }));
        rest = tail;
    }
    events.push(sse_event("end", &LiveEnd::of(record)));
    Box::pin(futures_util::stream::iter(
        events.into_iter().map(|e| Ok(Bytes::from(e))),
    ))
}

pub fn event_stream_response<S, E>(stream: S) -> HttpResponse
where
    S: Stream<Item = Result<Bytes, E>> + 'static,
    E: Into<Box<dyn std::error::Error>> + 'static,
{
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        // nginx: pass each event on as it comes.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream)
}

/// A worker's live-output server; dropping it does not stop it: call
/// [`LiveServer::stop`].
pub struct LiveServer {
    pub endpoint: LiveEndpoint,
    handle: actix_web::dev::ServerHandle,
}

impl LiveServer {
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

#[derive(Deserialize)]
struct ById {
    id: String,
}

struct LiveState {
    running: RunningRuns,
    token: String,
}

/// Serve the live output of `running` on `listen` (inside an actix system).
pub fn serve_live(running: RunningRuns, listen: &str) -> std::io::Result<LiveServer> {
    let listener = std::net::TcpListener::bind(listen).map_err(|e| {
        std::io::Error::other(format!("liveListen: cannot listen on {listen}: {e}"))
    })?;
    let addr = listener.local_addr()?;
    let host = if addr.ip().is_unspecified() {
        sysinfo::System::host_name().unwrap_or_else(|_| "localhost".into())
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    let token = crate::auth::random_hex(32);
    let state = web::Data::new(LiveState {
        running,
        token: token.clone(),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/live", web::get().to(live))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(LiveServer {
        endpoint: LiveEndpoint {
            url: format!("http://{host}:{}", addr.port()),
            token,
        },
        handle,
    })
}

async fn live(
    req: HttpRequest,
    state: web::Data<LiveState>,
    query: web::Query<ById>,
) -> HttpResponse {
    use subtle::ConstantTimeEq;
    let presented = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !bool::from(presented.as_bytes().ct_eq(state.token.as_bytes())) {
        return HttpResponse::Unauthorized().finish();
    }
    match state.running.follow(&query.id) {
        Some(live) => event_stream_response(follow(live)),
        None => HttpResponse::NotFound().finish(),
    }
}

/// Ask the worker at `endpoint` for run `id`'s stream; `None` when it does
/// not run it (or cannot be reached).
pub async fn from_worker(endpoint: &LiveEndpoint, id: &str) -> Option<HttpResponse> {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(5))
        .finish();
    let url = format!("{}/live", endpoint.url);
    let response = client
        .get(url)
        .query(&[("id", id)])
        .ok()?
        .bearer_auth(&endpoint.token)
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    Some(event_stream_response(response))
}
