//! The etcd engine of the coordinator, on `etcd-client`.
//!
//! Requests go through one client whose channel balances over every
//! endpoint and reconnects by itself after an etcd restart or a leader
//! change; a failed request is reported as [`CoordError::Unavailable`]. A
//! watch runs in its own task that re-creates the etcd watch from the next
//! revision it has not delivered, so a caller only hears of a disconnection
//! when history was compacted meanwhile ([`WatchItem::Resync`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::mpsc;

use super::keepers::{Keepers, OpenStream};
use super::{
    BatchPut, Claim, CondPut, Condition, CoordError, Coordinator, KeyValue, LeaseId, Result,
    Revision, WatchEvent, WatchItem, WatchStream, Write, ttl_seconds,
};

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// `host:port` or `http(s)://host:port`, one per cluster member.
    pub endpoints: Vec<String>,
    /// Prepended to every key; ends with `/`.
    pub prefix: String,
    pub dial_timeout: Duration,
    pub request_timeout: Duration,
    /// User and password, when etcd has authentication on.
    pub user: Option<(String, String)>,
    /// TLS: CA file, and a client certificate and key for mutual TLS.
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

/// Client write requests (Put, Txn, DeleteRange) an etcd member has handled,
/// read from its Prometheus text (`/metrics`): how benchmarks and the load
/// test count etcd writes per run.
pub fn client_writes_in_metrics(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("grpc_server_handled_total"))
        .filter(|l| {
            ["\"Put\"", "\"Txn\"", "\"DeleteRange\""]
                .iter()
                .any(|m| l.contains(m))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Requests an etcd member has served its clients, from its Prometheus
/// text: every unary call (reads, writes, lease grants and revokes) and
/// every message clients sent on a stream (each lease keep-alive, each
/// watch created). What the load test reports as etcd requests per run.
pub fn client_requests_in_metrics(metrics: &str) -> u64 {
    let value = |l: &str| l.rsplit(' ').next()?.parse::<f64>().ok();
    let unary = metrics
        .lines()
        .filter(|l| {
            l.starts_with("grpc_server_handled_total{") && l.contains("grpc_type=\"unary\"")
        })
        .filter_map(value);
    let streamed = metrics
        .lines()
        .filter(|l| {
            l.starts_with("grpc_server_msg_received_total{") && !l.contains("grpc_type=\"unary\"")
        })
        .filter_map(value);
    unary.chain(streamed).sum::<f64>() as u64
}

/// Raft proposals an etcd member has seen committed
/// (`etcd_server_proposals_committed_total`; every member commits the
/// same ones, so take one member's, the largest).
pub fn proposals_committed_in_metrics(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with("etcd_server_proposals_committed_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

impl EtcdOptions {
    pub fn new(endpoints: Vec<String>, prefix: &str) -> EtcdOptions {
        EtcdOptions {
            endpoints,
            prefix: prefix.to_string(),
            dial_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            user: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }
}

/// Retries of a request that could not connect: with one cluster member
/// down, the balancer may still pick its endpoint; a refused connection
/// never reached etcd, so retrying any request (even a transaction) is safe.
const CONNECT_RETRIES: u32 = 3;
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Depth of a watch's channel: a slow consumer applies backpressure to the
/// watch task rather than growing memory.
const WATCH_CHANNEL_DEPTH: usize = 1024;
/// Pause between attempts to re-create a broken watch.
const WATCH_RETRY_PAUSE: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct EtcdCoordinator {
    client: Client,
    prefix: String,
    /// Endpoint URLs as given to the client.
    endpoints: Arc<Vec<String>>,
    /// Endpoints taken out of the balancer after a refused connection,
    /// until a probe finds them listening again.
    quarantined: Arc<Mutex<HashSet<String>>>,
    /// Open keep-alive streams, by lease.
    keepers: Keepers,
}

/// How often a quarantined endpoint is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);

impl EtcdCoordinator {
    pub async fn connect(options: EtcdOptions) -> Result<EtcdCoordinator> {
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.dial_timeout)
            .with_timeout(options.request_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some((user, password)) = &options.user {
            connect = connect.with_user(user, password);
        }
        let tls = options.ca_file.is_some() || options.cert_file.is_some();
        if tls {
            connect = connect.with_tls(tls_options(&options)?);
        }
        let endpoints: Vec<String> = options
            .endpoints
            .iter()
            .map(|e| match (e.contains("://"), tls) {
                (true, _) => e.clone(),
                (false, true) => format!("https://{e}"),
                (false, false) => format!("http://{e}"),
            })
            .collect();
        let client = Client::connect(&endpoints, Some(connect))
            .await
            .map_err(|e| CoordError::Unavailable(format!("connect to {endpoints:?}: {e}")))?;
        Ok(EtcdCoordinator {
            client,
            prefix: options.prefix,
            endpoints: Arc::new(endpoints),
            quarantined: Arc::default(),
            keepers: Keepers::default(),
        })
    }

    /// The underlying client, for tools that need etcd-specific calls
    /// (benchmarks count keys, tests read status).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Compact etcd's history in the background, keeping the last
    /// `retention` of it: every `every`, note the current revision, and
    /// compact to the revision noted `retention` ago.
    ///
    /// Expired tick claims leave deleted revisions behind; etcd 3.4 slows
    /// down several-fold as they pile up (see docs/DESIGN.md, "Coordinator"), and
    /// many clusters run without auto-compaction. Compaction is idempotent,
    /// so every process of a cluster may run this; a watch that falls more
    /// than `retention` behind is told to resync.
    pub fn spawn_compactor(
        &self,
        retention: Duration,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let client = self.client.clone();
        let probe = self.full_key("");
        tokio::spawn(async move {
            let mut seen: std::collections::VecDeque<(tokio::time::Instant, Revision)> =
                std::collections::VecDeque::new();
            let mut ticker = tokio::time::interval(every);
            loop {
                ticker.tick().await;
                let options = GetOptions::new().with_count_only();
                let revision = match client.clone().get(probe.clone(), Some(options)).await {
                    Ok(resp) => resp.header().map_or(0, |h| h.revision()),
                    Err(error) => {
                        tracing::debug!(%error, "compactor: etcd unreachable; will retry");
                        continue;
                    }
                };
                let now = tokio::time::Instant::now();
                seen.push_back((now, revision));
                let mut target = None;
                while let Some((at, rev)) = seen.front().copied() {
                    if now.duration_since(at) < retention {
                        break;
                    }
                    target = Some(rev);
                    seen.pop_front();
                }
                if let Some(rev) = target {
                    match client.clone().compact(rev, None).await {
                        Ok(_) => tracing::debug!(revision = rev, "compacted etcd history"),
                        // Someone compacted further already: nothing to do.
                        Err(error) if error.to_string().contains("compacted") => {}
                        Err(error) => tracing::warn!(%error, revision = rev, "compaction failed"),
                    }
                }
            }
        })
    }

    /// Run `op` on the client, retrying when the connection was refused.
    async fn call<T, F, Fut>(&self, op: F) -> std::result::Result<T, etcd_client::Error>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let mut attempt = 0;
        loop {
            match op(self.client.clone()).await {
                Err(e) if attempt < CONNECT_RETRIES && is_connect_error(&e) => {
                    self.quarantine(&e.to_string()).await;
                    attempt += 1;
                    tokio::time::sleep(CONNECT_RETRY_PAUSE).await;
                }
                other => return other,
            }
        }
    }

    /// Take the endpoint named in a connection error out of the balancer
    /// (the balancer would keep choosing it: failing fast, it looks idle),
    /// and probe it until it listens again. The last endpoint is never
    /// removed.
    async fn quarantine(&self, error: &str) {
        let Some(url) = self
            .endpoints
            .iter()
            .find(|url| error.contains(url.rsplit("://").next().unwrap_or(url)))
            .cloned()
        else {
            return;
        };
        {
            let mut quarantined = self.quarantined.lock().unwrap_or_else(|e| e.into_inner());
            if quarantined.contains(&url) || quarantined.len() + 1 >= self.endpoints.len() {
                return;
            }
            quarantined.insert(url.clone());
        }
        if let Err(error) = self.client.remove_endpoint(&url).await {
            tracing::warn!(endpoint = %url, %error, "cannot take an etcd endpoint out of rotation");
        }
        tracing::warn!(endpoint = %url, "etcd endpoint refuses connections; out of rotation until it listens again");
        let (client, quarantined) = (self.client.clone(), self.quarantined.clone());
        tokio::spawn(async move {
            let address = url.rsplit("://").next().unwrap_or(&url).to_string();
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                if tokio::net::TcpStream::connect(&address).await.is_ok() {
                    if let Err(error) = client.add_endpoint(&url).await {
                        tracing::warn!(endpoint = %url, %error, "cannot put an etcd endpoint back");
                    }
                    quarantined
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&url);
                    tracing::info!(endpoint = %url, "etcd endpoint back in rotation");
                    return;
                }
            }
        });
    }

    /// Refresh `lease` on its open stream, opening one first if needed
    /// (the opening is itself a refresh, but its answer's TTL is not
    /// returned, so the first refresh of a stream costs two).
    async fn refresh_on(&self, open: &mut Option<OpenStream>, lease: LeaseId) -> Result<Duration> {
        let (keeper, stream) = match open {
            Some(open) => open,
            None => open.insert(
                self.call(|mut c| async move { c.lease_keep_alive(lease).await })
                    .await
                    .map_err(|e| lease_error(e, Some(lease)))?,
            ),
        };
        keeper
            .keep_alive()
            .await
            .map_err(|e| lease_error(e, Some(lease)))?;
        // No timeout of its own: a late answer still keeps the session (its
        // deadline counts from the send), and a connection that died
        // silently is closed by the transport's keep-alive.
        let answer = stream
            .message()
            .await
            .map_err(|e| lease_error(e, Some(lease)))?;
        match answer {
            Some(resp) if resp.ttl() > 0 => Ok(Duration::from_secs(resp.ttl() as u64)),
            Some(_) => Err(CoordError::LeaseNotFound(lease)),
            None => Err(CoordError::Unavailable(format!(
                "the keep-alive stream of lease {lease} ended"
            ))),
        }
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    fn to_key_value(&self, kv: &etcd_client::KeyValue) -> KeyValue {
        KeyValue {
            key: relative_key(&self.prefix, kv.key()),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            lease: kv.lease(),
        }
    }
}

fn tls_options(options: &EtcdOptions) -> Result<TlsOptions> {
    let read = |path: &str| {
        std::fs::read(path).map_err(|e| CoordError::Unavailable(format!("read {path}: {e}")))
    };
    let mut tls = TlsOptions::new();
    if let Some(ca) = &options.ca_file {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    if let (Some(cert), Some(key)) = (&options.cert_file, &options.key_file) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(tls)
}

fn relative_key(prefix: &str, key: &[u8]) -> String {
    let key = String::from_utf8_lossy(key);
    key.strip_prefix(prefix).unwrap_or(&key).to_string()
}

/// The request could not reach an etcd member at all.
fn is_connect_error(e: &etcd_client::Error) -> bool {
    let text = e.to_string();
    text.contains("tcp connect error") || text.contains("Connection refused")
}

fn unavailable(e: etcd_client::Error) -> CoordError {
    CoordError::Unavailable(e.to_string())
}

/// Keys a page of a listing asks for: about 1 MiB of tick claims, 2.5 MiB
/// of typical job definitions. One Range over a whole prefix passed gRPC's
/// 4 MiB message limit once a prefix grew (the managers' sweep of `ticks/`
/// from about 8,000 ticks a minute, as claims are kept five minutes) and
/// then failed every time, while etcd built the whole answer each time.
const LIST_PAGE: i64 = 10_000;

/// How often a listing starts over when history is compacted under it.
const LIST_RESTARTS: u32 = 3;

enum ListError {
    /// The listing's revision was compacted between two pages.
    Compacted,
    Etcd(etcd_client::Error),
}

/// The end of the key range holding every key that starts with `prefix`
/// (etcd's convention: the prefix with its last byte below 0xff raised by
/// one; all of the keyspace, `\0`, when there is none).
fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|b| *b < 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

/// The answer was larger than the client takes in one message.
fn too_large(e: &etcd_client::Error) -> bool {
    e.to_string().contains("message length too large")
}

fn compacted(e: &etcd_client::Error) -> bool {
    e.to_string()
        .contains("required revision has been compacted")
}

impl EtcdCoordinator {
    /// Every key under `prefix`, read [`LIST_PAGE`] keys at a time, every
    /// page at the first page's revision (one consistent snapshot). A page
    /// too large for a gRPC message is asked again at half the keys.
    async fn list_in_pages(
        &self,
        prefix: &str,
    ) -> std::result::Result<(Vec<KeyValue>, Revision), ListError> {
        let mut from = self.full_key(prefix).into_bytes();
        let end = prefix_range_end(&from);
        let (mut kvs, mut revision, mut page) = (Vec::new(), 0, LIST_PAGE);
        loop {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(page)
                .with_revision(revision);
            let answer = self
                .call(|mut c| {
                    let (from, options) = (from.clone(), options.clone());
                    async move { c.get(from, Some(options)).await }
                })
                .await;
            let resp = match answer {
                Ok(resp) => resp,
                Err(e) if too_large(&e) && page > 1 => {
                    page /= 2;
                    continue;
                }
                Err(e) if compacted(&e) => return Err(ListError::Compacted),
                Err(e) => return Err(ListError::Etcd(e)),
            };
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            kvs.extend(resp.kvs().iter().map(|kv| self.to_key_value(kv)));
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    // The next page starts right after the last key read.
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok((kvs, revision)),
            }
        }
    }
}

#[async_trait]
impl Coordinator for EtcdCoordinator {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let full = self.full_key(key);
        let resp = self
            .call(|mut c| {
                let full = full.clone();
                async move { c.get(full, None).await }
            })
            .await
            .map_err(unavailable)?;
        Ok(resp.kvs().first().map(|kv| self.to_key_value(kv)))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        let mut restarts = 0;
        loop {
            match self.list_in_pages(prefix).await {
                // History was compacted between two pages: list again.
                Err(ListError::Compacted) if restarts < LIST_RESTARTS => restarts += 1,
                Err(ListError::Compacted) => {
                    return Err(CoordError::Unavailable(format!(
                        "listing {prefix}: history compacted under the listing {} times",
                        restarts + 1
                    )));
                }
                Err(ListError::Etcd(e)) => return Err(unavailable(e)),
                Ok(listing) => return Ok(listing),
            }
        }
    }

    async fn list_first(&self, prefix: &str, limit: u64) -> Result<Vec<KeyValue>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let options = GetOptions::new()
            .with_prefix()
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let full = self.full_key(prefix);
        let resp = self
            .call(|mut c| {
                let (full, options) = (full.clone(), options.clone());
                async move { c.get(full, Some(options)).await }
            })
            .await
            .map_err(unavailable)?;
        Ok(resp.kvs().iter().map(|kv| self.to_key_value(kv)).collect())
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<Revision> {
        let full = self.full_key(key);
        let resp = self
            .call(|mut c| {
                let (full, value) = (full.clone(), value.clone());
                let options = lease.map(|id| PutOptions::new().with_lease(id));
                async move { c.put(full, value, options).await }
            })
            .await
            .map_err(|e| lease_error(e, lease))?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    async fn delete(&self, key: &str) -> Result<Option<KeyValue>> {
        let full = self.full_key(key);
        let resp = self
            .call(|mut c| {
                let full = full.clone();
                async move {
                    c.delete(
                        full,
                        Some(etcd_client::DeleteOptions::new().with_prev_key()),
                    )
                    .await
                }
            })
            .await
            .map_err(unavailable)?;
        Ok(resp.prev_kvs().first().map(|kv| self.to_key_value(kv)))
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Claim> {
        let full = self.full_key(key);
        let resp = self
            .call(|mut c| {
                let options = lease.map(|id| PutOptions::new().with_lease(id));
                let txn = Txn::new()
                    .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(full.clone(), value.clone(), options)])
                    .or_else([TxnOp::get(full.clone(), None)]);
                async move { c.txn(txn).await }
            })
            .await
            .map_err(|e| lease_error(e, lease))?;
        if resp.succeeded() {
            return Ok(Claim::Won {
                revision: resp.header().map_or(0, |h| h.revision()),
            });
        }
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(get) = op
                && let Some(kv) = get.kvs().first()
            {
                return Ok(Claim::Held(self.to_key_value(kv)));
            }
        }
        // The holder vanished between the compare and the get (its lease
        // ended); the claim was still lost at the compare.
        Err(CoordError::Unavailable(format!(
            "put-if-absent on {key}: lost the race to a key that then disappeared"
        )))
    }

    async fn put_if_value(
        &self,
        key: &str,
        expected: &[u8],
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<bool> {
        let full = self.full_key(key);
        let resp = self
            .call(|mut c| {
                let options = lease.map(|id| PutOptions::new().with_lease(id));
                let txn = Txn::new()
                    .when([Compare::value(
                        full.clone(),
                        CompareOp::Equal,
                        expected.to_vec(),
                    )])
                    .and_then([TxnOp::put(full.clone(), value.clone(), options)]);
                async move { c.txn(txn).await }
            })
            .await
            .map_err(|e| lease_error(e, lease))?;
        Ok(resp.succeeded())
    }

    async fn put_all_if(&self, puts: &[CondPut]) -> Result<BatchPut> {
        let full: Vec<String> = puts.iter().map(|p| self.full_key(&p.key)).collect();
        let lease = puts.iter().find_map(|p| p.lease);
        let resp = self
            .call(|mut c| {
                let compares = puts.iter().zip(&full).map(|(put, key)| match &put.when {
                    Condition::Absent => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                    Condition::ValueIs(expected) => {
                        Compare::value(key.clone(), CompareOp::Equal, expected.clone())
                    }
                });
                let writes = puts.iter().zip(&full).map(|(put, key)| {
                    let options = put.lease.map(|id| PutOptions::new().with_lease(id));
                    TxnOp::put(key.clone(), put.value.clone(), options)
                });
                let reads = full.iter().map(|key| TxnOp::get(key.clone(), None));
                let txn = Txn::new()
                    .when(compares.collect::<Vec<_>>())
                    .and_then(writes.collect::<Vec<_>>())
                    .or_else(reads.collect::<Vec<_>>());
                async move { c.txn(txn).await }
            })
            .await
            .map_err(|e| lease_error(e, lease))?;
        if resp.succeeded() {
            return Ok(BatchPut::AllPut {
                revision: resp.header().map_or(0, |h| h.revision()),
            });
        }
        let held = resp
            .op_responses()
            .into_iter()
            .map(|op| match op {
                TxnOpResponse::Get(get) => get.kvs().first().map(|kv| self.to_key_value(kv)),
                _ => None,
            })
            .collect();
        Ok(BatchPut::NonePut(held))
    }

    async fn write_all(&self, writes: &[Write]) -> Result<Revision> {
        let full: Vec<String> = writes.iter().map(|w| self.full_key(w.key())).collect();
        let lease = writes.iter().find_map(Write::lease);
        let resp = self
            .call(|mut c| {
                let ops = writes.iter().zip(&full).map(|(write, key)| match write {
                    Write::Put { value, lease, .. } => {
                        let options = lease.map(|id| PutOptions::new().with_lease(id));
                        TxnOp::put(key.clone(), value.clone(), options)
                    }
                    Write::Delete { .. } => TxnOp::delete(key.clone(), None),
                });
                let txn = Txn::new().and_then(ops.collect::<Vec<_>>());
                async move { c.txn(txn).await }
            })
            .await
            .map_err(|e| lease_error(e, lease))?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL_DEPTH);
        let watcher = Watcher {
            client: self.client.clone(),
            prefix: self.prefix.clone(),
            watched: self.full_key(prefix),
            next_revision: from,
            tx,
        };
        // Open the first etcd watch before returning, so a caller that
        // writes right after `watch` returns is sure to see the write.
        let stream = watcher.open().await?;
        tokio::spawn(watcher.run(stream));
        Ok(rx)
    }

    async fn grant(&self, ttl: Duration) -> Result<LeaseId> {
        let resp = self
            .call(|mut c| async move { c.lease_grant(ttl_seconds(ttl), None).await })
            .await
            .map_err(unavailable)?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        let keeper = self.keepers.of(lease);
        let mut open = keeper.lock().await;
        let refreshed = self.refresh_on(&mut open, lease).await;
        if refreshed.is_err() {
            *open = None;
            self.keepers.close(lease);
        }
        refreshed
    }

    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        self.keepers.close(lease);
        match self
            .call(|mut c| async move { c.lease_revoke(lease).await })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_lease_not_found(&e) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// etcd says "requested lease not found" (gRPC) or "lease not found"
/// (keep-alive stream); both mean the lease has ended.
fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    e.to_string().contains("lease not found")
}

fn lease_error(e: etcd_client::Error, lease: Option<LeaseId>) -> CoordError {
    match lease {
        Some(id) if is_lease_not_found(&e) => CoordError::LeaseNotFound(id),
        _ => unavailable(e),
    }
}

/// The task behind one [`Coordinator::watch`].
struct Watcher {
    client: Client,
    prefix: String,
    watched: String,
    /// The first revision not yet delivered to the caller.
    next_revision: Revision,
    tx: mpsc::Sender<WatchItem>,
}

impl Watcher {
    async fn open(&self) -> Result<etcd_client::WatchStream> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.next_revision)
            .with_progress_notify();
        self.client
            .clone()
            .watch(self.watched.clone(), Some(options))
            .await
            .map_err(unavailable)
    }

    async fn run(mut self, mut stream: etcd_client::WatchStream) {
        loop {
            match self.pump(&mut stream).await {
                Pump::CallerGone => return,
                Pump::Resync(reason) => {
                    let _ = self.tx.send(WatchItem::Resync { reason }).await;
                    return;
                }
                Pump::Broken(error) => {
                    tracing::warn!(prefix = %self.watched, %error, next_revision = self.next_revision, "watch broken; re-creating");
                }
            }
            // Re-create the watch from the first undelivered revision until
            // etcd answers again or the caller goes away.
            stream = loop {
                if self.tx.is_closed() {
                    return;
                }
                tokio::time::sleep(WATCH_RETRY_PAUSE).await;
                match self.open().await {
                    Ok(stream) => break stream,
                    Err(error) => {
                        tracing::debug!(prefix = %self.watched, %error, "watch re-create failed")
                    }
                }
            };
        }
    }

    async fn pump(&mut self, stream: &mut etcd_client::WatchStream) -> Pump {
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                _ = self.tx.closed() => return Pump::CallerGone,
            };
            let resp = match message {
                Ok(Some(resp)) => resp,
                Ok(None) => return Pump::Broken("stream ended".into()),
                Err(e) => return Pump::Broken(e.to_string()),
            };
            if resp.compact_revision() > 0 {
                return Pump::Resync(format!(
                    "history compacted up to revision {} (watch wanted {})",
                    resp.compact_revision(),
                    self.next_revision
                ));
            }
            if resp.canceled() {
                return Pump::Resync(format!("watch cancelled: {}", resp.cancel_reason()));
            }
            if resp.events().is_empty() {
                continue;
            }
            let events: Vec<WatchEvent> = resp
                .events()
                .iter()
                .filter_map(|event| {
                    let kv = event.kv()?;
                    Some(match event.event_type() {
                        EventType::Put => WatchEvent::Put(KeyValue {
                            key: relative_key(&self.prefix, kv.key()),
                            value: kv.value().to_vec(),
                            create_revision: kv.create_revision(),
                            mod_revision: kv.mod_revision(),
                            lease: kv.lease(),
                        }),
                        EventType::Delete => WatchEvent::Delete {
                            key: relative_key(&self.prefix, kv.key()),
                            revision: kv.mod_revision(),
                        },
                    })
                })
                .collect();
            if let Some(last) = events.last() {
                self.next_revision = last.revision() + 1;
            }
            if self.tx.send(WatchItem::Events(events)).await.is_err() {
                return Pump::CallerGone;
            }
        }
    }
}

enum Pump {
    CallerGone,
    Resync(String),
    Broken(String),
}

#[cfg(test)]
mod tests {
    use super::{client_writes_in_metrics, prefix_range_end};

    #[test]
    fn a_prefix_range_ends_past_every_key_that_starts_with_it() {
        let cases: [(&[u8], &[u8]); 5] = [
            (b"/d/ticks/", b"/d/ticks0"),
            (b"a", b"b"),
            (b"a\xff", b"b"),
            (b"a\xfe\xff\xff", b"a\xff"),
            (b"\xff\xff", b"\0"),
        ];
        for (prefix, end) in cases {
            assert_eq!(prefix_range_end(prefix), end, "{prefix:?}");
        }
        assert_eq!(prefix_range_end(b""), b"\0");
    }

    #[test]
    fn client_writes_count_put_txn_and_delete_range_only() {
        let metrics = r#"# TYPE grpc_server_handled_total counter
grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 10
grpc_server_handled_total{grpc_code="OK",grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 5
grpc_server_handled_total{grpc_code="OK",grpc_method="DeleteRange",grpc_service="etcdserverpb.KV",grpc_type="unary"} 2
grpc_server_handled_total{grpc_code="OK",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 99
grpc_server_started_total{grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 11
"#;
        assert_eq!(client_writes_in_metrics(metrics), 17);
        assert_eq!(client_writes_in_metrics(""), 0);
    }

    #[test]
    fn client_requests_count_unary_calls_and_stream_messages() {
        let metrics = r#"grpc_server_handled_total{grpc_code="OK",grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 5
grpc_server_handled_total{grpc_code="OK",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 7
grpc_server_handled_total{grpc_code="OK",grpc_method="LeaseGrant",grpc_service="etcdserverpb.Lease",grpc_type="unary"} 1
grpc_server_handled_total{grpc_code="Canceled",grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 3
grpc_server_msg_received_total{grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"} 20
grpc_server_msg_received_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 4
grpc_server_msg_received_total{grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 5
etcd_server_proposals_committed_total 1234
etcd_server_proposals_committed_total_other 9
"#;
        assert_eq!(
            super::client_requests_in_metrics(metrics),
            5 + 7 + 1 + 20 + 4
        );
        assert_eq!(super::proposals_committed_in_metrics(metrics), 1234);
        assert_eq!(super::proposals_committed_in_metrics(""), 0);
    }
}
