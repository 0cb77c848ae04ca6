//! Shared by the examples: how they find the cluster.

/// Endpoints from `--endpoints A,B`, else `LEASEHOLD_ENDPOINTS`, else
/// `127.0.0.1:7070`.
pub fn endpoints() -> Vec<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--endpoints")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var("LEASEHOLD_ENDPOINTS").ok())
        .unwrap_or_else(|| "127.0.0.1:7070".into())
        .split(',')
        .map(String::from)
        .collect()
}
