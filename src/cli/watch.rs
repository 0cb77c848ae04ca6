//! `leasehold watch`: prints events and survives the loss of its node.
//!
//! The watcher keeps the last revision it handled (from events and from
//! progress notifications). When its stream breaks it reconnects to the next
//! endpoint with `start_revision = last + 1`, so it prints every change
//! exactly once and in order across reconnects. A start revision that is no
//! longer in the history ends the command with exit code 1.

use super::output::{self, Format};
use super::{report, Scope, Target, EXIT_OK, EXIT_REFUSED};
use crate::api::status::{error_info, reason};
use crate::client::Client;
use crate::proto::v1 as pb;
use serde_json::json;
use std::io::Write;
use std::time::Duration;
use tonic::Code;

fn type_name(t: i32) -> &'static str {
    match pb::watch_event::Type::try_from(t) {
        Ok(pb::watch_event::Type::Added) => "ADDED",
        Ok(pb::watch_event::Type::Modified) => "MODIFIED",
        Ok(pb::watch_event::Type::Deleted) => "DELETED",
        Ok(pb::watch_event::Type::Expired) => "EXPIRED",
        Ok(pb::watch_event::Type::Progress) => "PROGRESS",
        _ => "UNKNOWN",
    }
}

/// One printed line for an event.
pub fn event_line(e: &pb::WatchEvent, format: Format) -> String {
    let lease = e.lease.clone().unwrap_or_default();
    match format {
        Format::Table => {
            let m = lease.metadata.unwrap_or_default();
            let spec = lease.spec.unwrap_or_default();
            let st = lease.status.unwrap_or_default();
            format!(
                "{} {} {}/{} holder={} token={}",
                e.revision,
                type_name(e.r#type),
                m.namespace,
                m.name,
                spec.holder_identity,
                st.fencing_token
            )
        }
        // One JSON object per line, shaped like a Kubernetes watch event.
        _ => json!({
            "type": type_name(e.r#type),
            "revision": e.revision,
            "object": output::lease_json(e.lease.as_ref().unwrap_or(&pb::Lease::default())),
        })
        .to_string(),
    }
}

/// `leasehold watch`: every change in `scope`, from revision `from` (or
/// from now on).
pub async fn command(
    target: &Target,
    scope: &Scope,
    from: Option<u64>,
    max_events: Option<u64>,
    format: Format,
) -> i32 {
    // No call deadline: a watch lasts until interrupted (the client's
    // default only bounds the unary calls it makes).
    let client = match Client::with_options(target.endpoints.clone(), target.opts.clone()) {
        Ok(c) => c,
        Err(s) => return report(&s),
    };
    let req = pb::WatchRequest {
        namespace: scope.namespace(),
        name: String::new(),
        label_selector: scope.selector.clone(),
        start_revision: from.unwrap_or(0),
        progress_notify: true,
        progress_interval_ms: 2_000,
    };
    run(&client, req, format, max_events).await
}

/// Runs the watch until interrupted, `max_events` printed, or a fatal error.
pub async fn run(
    client: &Client,
    mut req: pb::WatchRequest,
    format: Format,
    max_events: Option<u64>,
) -> i32 {
    let n = client.endpoints().len();
    let mut endpoint = 0usize;
    let mut last: Option<u64> = req.start_revision.checked_sub(1);
    let mut printed = 0u64;
    let mut failures = 0u32;
    let stdout = std::io::stdout();
    loop {
        if let Some(l) = last {
            req.start_revision = l + 1;
        }
        let result = client.watch_on(endpoint, req.clone()).await;
        let mut stream = match result {
            Ok(s) => s,
            Err(s) => {
                if let Some(code) = fatal(&s) {
                    return code;
                }
                failures += 1;
                backoff(failures, n).await;
                endpoint = (endpoint + 1) % n;
                continue;
            }
        };
        let outcome = loop {
            match stream.message().await {
                Ok(Some(e)) => {
                    failures = 0;
                    // From "now": anchor on the first thing the server says.
                    last = Some(last.map_or(e.revision, |l| l.max(e.revision)));
                    if e.r#type == pb::watch_event::Type::Progress as i32 {
                        continue;
                    }
                    let mut out = stdout.lock();
                    let _ = writeln!(out, "{}", event_line(&e, format));
                    let _ = out.flush();
                    printed += 1;
                    if max_events.is_some_and(|m| printed >= m) {
                        return EXIT_OK;
                    }
                }
                Ok(None) => break None,
                Err(s) => break Some(s),
            }
        };
        if let Some(s) = &outcome {
            if let Some(code) = fatal(s) {
                return code;
            }
            if let Some((r, meta)) = error_info(s) {
                if r == reason::WATCHER_TOO_SLOW {
                    if let Some(resume) = meta
                        .get("resumeRevision")
                        .and_then(|v| v.parse::<u64>().ok())
                    {
                        last = resume.checked_sub(1);
                    }
                }
            }
            tracing::warn!(endpoint = %client.endpoints()[endpoint], "watch interrupted: {}", s.message());
        }
        failures += 1;
        backoff(failures, n).await;
        endpoint = (endpoint + 1) % n;
    }
}

/// The exit code for errors that reconnecting cannot fix.
fn fatal(s: &tonic::Status) -> Option<i32> {
    match s.code() {
        Code::InvalidArgument => Some(report(s)),
        Code::OutOfRange => {
            report(s);
            Some(EXIT_REFUSED)
        }
        _ => None,
    }
}

/// No wait while other endpoints are untried; then up to 1 s.
async fn backoff(failures: u32, endpoints: usize) {
    if (failures as usize) < endpoints {
        return;
    }
    let ms = 50u64.saturating_mul(1 << failures.min(5)).min(1_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}
