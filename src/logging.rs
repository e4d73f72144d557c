//! Process-wide tracing setup, shared by every binary.

/// Install a stderr subscriber filtered by `level` (a level or a tracing
/// filter) writing `format` (`text` or `json`), both already validated by the
/// config loader.
pub fn init(level: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) keeps the first subscriber; that is fine.
    let _ = if format == "json" {
        // One JSON object per line: time, level, target, message, fields.
        builder.json().with_ansi(false).try_init()
    } else {
        // Colour only on a terminal: log files and the journal get plain text.
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}
