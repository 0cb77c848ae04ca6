//! Re-reading certificates, keys, CA bundles, tokens and rules without a
//! restart: every `interval` (the files' modification time and size), and
//! at once on SIGHUP.
//!
//! Polling rather than inotify: a single-file Docker bind mount never sees
//! a file replaced by rename, Kubernetes secret volumes swap a symlink,
//! and kube-apiserver polls as well. A file that changed is re-read whole
//! and validated before anything is swapped; on any error the old material
//! stays in use and the error is logged (a half-written certificate pair
//! or a broken rules file never takes effect, and never fails open). TLS
//! state belongs to each connection, so open connections (peers' included)
//! are not touched: a rotation costs no election.

use super::tls::Loaded;
use super::Auth;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Default time between two looks at the files.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

type Stamp = Option<(SystemTime, u64)>;

fn stamp(p: &PathBuf) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn stamps(paths: &[PathBuf]) -> HashMap<PathBuf, Stamp> {
    paths.iter().map(|p| (p.clone(), stamp(p))).collect()
}

/// Called with the new TLS material after it was swapped in (the node
/// gives its peer channels the new client certificate).
pub type OnTls = Box<dyn Fn(&Loaded) + Send + Sync>;

/// What one pass found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The TLS material was replaced.
    pub tls: bool,
    /// The tokens were re-read.
    pub tokens: bool,
    /// The rules were re-read.
    pub rules: bool,
    /// Errors (the old material stays).
    pub errors: Vec<String>,
}

/// Re-reads whatever changed since `seen` (everything with `force`).
pub fn pass(
    auth: &Auth,
    on_tls: &OnTls,
    seen: &mut HashMap<PathBuf, Stamp>,
    force: bool,
) -> Outcome {
    let mut out = Outcome::default();
    let mut changed = |paths: &[PathBuf]| {
        let now = stamps(paths);
        let differs = force || paths.iter().any(|p| seen.get(p) != now.get(p));
        seen.extend(now);
        differs
    };
    if let Some(tls) = &auth.tls {
        if changed(&tls.files.paths()) {
            match Loaded::load(&tls.files) {
                Ok(new) if new.digest != tls.current().digest => {
                    on_tls(&new);
                    tls.replace(new);
                    out.tls = true;
                }
                Ok(_) => {}
                Err(e) => out.errors.push(e),
            }
        }
    }
    if let Some(p) = auth.config.token_file.clone() {
        if changed(std::slice::from_ref(&p)) {
            match auth.reload_tokens() {
                Ok(c) => out.tokens = c,
                Err(e) => out.errors.push(e),
            }
        }
    }
    if let Some(p) = auth.config.rules_file.clone() {
        if changed(std::slice::from_ref(&p)) {
            match auth.reload_rules() {
                Ok(c) => out.rules = c,
                Err(e) => out.errors.push(e),
            }
        }
    }
    out
}

/// Runs until dropped: a pass every `interval` and on each SIGHUP.
pub async fn run(auth: Arc<Auth>, interval: Duration, on_tls: OnTls) {
    let mut paths = Vec::new();
    if let Some(t) = &auth.tls {
        paths.extend(t.files.paths());
    }
    paths.extend(auth.config.token_file.clone());
    paths.extend(auth.config.rules_file.clone());
    if paths.is_empty() {
        return;
    }
    let mut seen = stamps(&paths);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let force = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                tracing::info!("SIGHUP: reloading certificates, tokens and rules");
                true
            }
        };
        let out = pass(&auth, &on_tls, &mut seen, force);
        for e in &out.errors {
            tracing::error!("reload failed, keeping what was loaded before: {e}");
        }
        if out.tls {
            tracing::info!("TLS certificates and CAs reloaded");
        }
        if out.tokens {
            tracing::info!("bearer tokens reloaded");
        }
        if out.rules {
            tracing::info!(
                rules = auth.rule_count().unwrap_or(0),
                "authorization rules reloaded"
            );
        }
    }
}
