//! Process-wide tracing setup, shared by every binary.

/// Install a stderr subscriber filtered by `level` (a level or a tracing
/// filter, already validated by the config loader).
pub fn init(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second init (tests) keeps the first subscriber; that is fine.
    // Colour only on a terminal: log files and the journal get plain text.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
