//! distcron: a distributed cron.
//!
//! Operators define jobs (a shell command and a cron schedule) through an
//! HTTP API or the web console; a fleet of workers runs each scheduled tick
//! exactly once; every run's output lands in a queryable log.
//!
//! # Layout
//!
//! - [`schedule`]: cron expressions and the pure next-fire computation.
//! - [`job`]: the job definition and its validation.
//! - [`chain`]: job chains (`onSuccess`, `onFailure`): the graph checks and
//!   the keys that start each chained run once.
//! - [`config`]: layered configuration (file, `DISTCRON_*`, flags).
//! - [`coord`]: the coordinator trait (jobs, workers, tick claims, leases,
//!   watches) with its etcd and embedded engines, and the one
//!   list-then-watch follower.
//! - [`keyspace`]: every key prefix of the coordinator and its value type.
//! - [`runlog`]: the run log trait with its MongoDB and embedded engines,
//!   and the local journal in front of it.
//! - [`runner`]: one run of a job: process group, output capture, kill.
//! - [`clock`]: injected wall-clock time.
//! - [`actors`]: the worker's actors.
//! - [`worker`]: a worker's actors assembled, started and stopped.
//! - [`missed`]: the managers' sweep that records ticks nobody could run.
//! - [`notify`]: notifications (web hooks, email): rules, throttle, the
//!   Notifier actor, and the notices that send each once per cluster.
//! - [`auth`]: tokens, users, sessions, roles and the route permission table.
//! - [`audit`]: the audit log's records, store trait and writer.
//! - [`http`]: the actix-web app shared by the manager, `standalone` and tests;
//!   [`http::guard`] is the middleware that applies [`auth`].
//! - [`cli`]: the `distcron schedule` tool.
//! - `src/bin/`: thin binaries that load config and call into the library.

pub mod actors;
pub mod audit;
pub mod auth;
pub mod chain;
pub mod cli;
pub mod clock;
pub mod config;
pub mod coord;
pub mod datadir;
pub mod http;
pub mod job;
pub mod keyspace;
pub mod logging;
pub mod missed;
pub mod notify;
pub mod runlog;
pub mod runner;
pub mod schedule;
pub mod signals;
pub mod worker;
