//! What the custom (non-criterion) benchmarks share.
#![allow(dead_code)] // each benchmark uses a different subset

/// Whether to measure: `cargo test --all-targets` runs benchmark binaries
/// too, and only `cargo bench` (which passes `--bench`) should spend
/// minutes measuring. Says so when it is not asked.
pub fn requested() -> bool {
    let bench = std::env::args().any(|a| a == "--bench");
    if !bench {
        println!(
            "{}: a benchmark; run it with cargo bench",
            env!("CARGO_CRATE_NAME")
        );
    }
    bench
}

/// `ETCD_ENDPOINTS` and `MONGODB_URI`, as `scripts/bench.sh` sets them.
pub fn servers() -> Option<(String, String)> {
    match (
        std::env::var("ETCD_ENDPOINTS"),
        std::env::var("MONGODB_URI"),
    ) {
        (Ok(etcd), Ok(mongo)) => Some((etcd, mongo)),
        _ => {
            eprintln!(
                "{0}: set ETCD_ENDPOINTS and MONGODB_URI (scripts/bench.sh {0} does)",
                env!("CARGO_CRATE_NAME")
            );
            None
        }
    }
}
