//! `distcron-manager`: the HTTP API and console. Stateless; run several
//! behind a load balancer.

use std::net::TcpListener;

use distcron::config::{Role, load_or_exit};
use distcron::{http, logging, signals};

fn main() -> std::io::Result<()> {
    let config = load_or_exit(Role::Manager, "distcron-manager", 1);
    logging::init(&config.log_level);
    let listener = TcpListener::bind(&config.listen)?;
    tracing::info!(listen = %config.listen, "manager listening");
    actix_rt::System::new().block_on(http::serve(
        http::AppState::new(),
        listener,
        signals::shutdown(),
    ))
}
