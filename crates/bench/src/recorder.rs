//! Where every operation's outcome goes: latency histograms (HDR, in
//! microseconds), counts of outcomes and of errors by kind, a latency series
//! over time for plots, and the numbers behind the progress line.
//!
//! Only operations whose intended send time falls inside the measured window
//! (after warmup, before the end) count in the totals; the series covers the
//! whole run, warmup included, so a plot shows what happened when.
//!
//! One mutex guards the histograms. An uncontended lock costs tens of
//! nanoseconds against operations of hundreds of microseconds, and keeps
//! "p99 so far" exact.

use super::systems::OpError;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Highest latency the histograms track exactly: 10 minutes, in µs.
const MAX_MICROS: u64 = 600_000_000;

/// A histogram of microseconds with 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant bounds are valid")
}

/// A coarser histogram (2 significant digits) for series buckets, which are
/// many.
fn bucket_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 2).expect("constant bounds are valid")
}

/// Records `d` in `h`, in µs, clamped to the tracked range.
pub fn record_duration(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(MAX_MICROS);
    h.saturating_record(us.clamp(1, MAX_MICROS));
}

/// When one operation was meant to go, went, and came back.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Intended send time (open loop: the schedule; closed loop: `sent`).
    pub intended: Instant,
    /// When the request was actually sent.
    pub sent: Instant,
    /// When the answer arrived.
    pub done: Instant,
}

impl Timing {
    /// Latency as the caller experienced it: from the intended send time.
    pub fn latency(&self) -> Duration {
        self.done.saturating_duration_since(self.intended)
    }

    /// Service time: from the actual send.
    pub fn service(&self) -> Duration {
        self.done.saturating_duration_since(self.sent)
    }
}

/// One series bucket.
pub struct Bucket {
    /// Successful operations sent in this bucket.
    pub ok: u64,
    /// Failed operations sent in this bucket.
    pub errors: u64,
    /// Latency of the successful ones.
    pub latency: Histogram<u64>,
}

/// A successful write, for failover's availability figures.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    /// When it was (intended to be) sent.
    pub sent: Instant,
    /// When it was acknowledged.
    pub acked: Instant,
}

struct Inner {
    latency: Histogram<u64>,
    service: Histogram<u64>,
    per_op: BTreeMap<&'static str, Histogram<u64>>,
    outcomes: BTreeMap<&'static str, u64>,
    errors: BTreeMap<String, u64>,
    first_errors: BTreeMap<String, String>,
    series: Vec<Bucket>,
    acks: Option<Vec<Ack>>,
    revisions: Option<Vec<(u64, Instant)>>,
}

/// The shared recorder of one run.
pub struct Recorder {
    start: Instant,
    measure_from: Instant,
    measure_until: Instant,
    series_interval: Duration,
    ok: AtomicU64,
    errors: AtomicU64,
    events: AtomicU64,
    inner: Mutex<Inner>,
}

/// Totals of a finished run, taken out of the recorder.
pub struct Totals {
    /// Latency of measured successful operations (from intended send).
    pub latency: Histogram<u64>,
    /// Service time of the same operations (from actual send).
    pub service: Histogram<u64>,
    /// Latency per operation name.
    pub per_op: BTreeMap<&'static str, Histogram<u64>>,
    /// Outcome counts (granted, held, ...).
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Errors by kind (measured window only).
    pub errors: BTreeMap<String, u64>,
    /// The first message seen for each error kind.
    pub first_errors: BTreeMap<String, String>,
    /// The series over the whole run.
    pub series: Vec<Bucket>,
    /// Successful writes, when recorded.
    pub acks: Vec<Ack>,
    /// Revisions of acknowledged renewals, when recorded.
    pub revisions: Vec<(u64, Instant)>,
}

impl Recorder {
    /// A recorder for a run that starts at `start`, measures from
    /// `start + warmup` for `duration`.
    pub fn new(
        start: Instant,
        warmup: Duration,
        duration: Duration,
        series_interval: Duration,
    ) -> Self {
        Recorder {
            start,
            measure_from: start + warmup,
            measure_until: start + warmup + duration,
            series_interval: series_interval.max(Duration::from_millis(1)),
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            events: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                latency: histogram(),
                service: histogram(),
                per_op: BTreeMap::new(),
                outcomes: BTreeMap::new(),
                errors: BTreeMap::new(),
                first_errors: BTreeMap::new(),
                series: Vec::new(),
                acks: None,
                revisions: None,
            }),
        }
    }

    /// Also keep every successful write's send and ack time (failover).
    pub fn keep_acks(self) -> Self {
        self.lock().acks = Some(Vec::new());
        self
    }

    /// Also keep the revision of every acknowledged renewal (watch).
    pub fn keep_revisions(self) -> Self {
        self.lock().revisions = Some(Vec::new());
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start of the run (time 0 of the series).
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Start of the measured window.
    pub fn measure_from(&self) -> Instant {
        self.measure_from
    }

    /// End of the measured window; no operation is sent after it.
    pub fn measure_until(&self) -> Instant {
        self.measure_until
    }

    /// Whether an operation intended at `t` counts in the totals.
    pub fn measured(&self, t: Instant) -> bool {
        t >= self.measure_from && t < self.measure_until
    }

    fn bucket<'a>(&self, inner: &'a mut Inner, t: Instant) -> &'a mut Bucket {
        let i = (t.saturating_duration_since(self.start).as_nanos()
            / self.series_interval.as_nanos().max(1)) as usize;
        while inner.series.len() <= i {
            inner.series.push(Bucket {
                ok: 0,
                errors: 0,
                latency: bucket_histogram(),
            });
        }
        &mut inner.series[i]
    }

    /// Records a successful operation `op`; `outcome` (e.g. "granted",
    /// "held") is counted when given; `write` keeps it for failover.
    pub fn ok(&self, op: &'static str, t: Timing, outcome: Option<&'static str>, write: bool) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        let measured = self.measured(t.intended);
        let mut inner = self.lock();
        record_duration(
            &mut self.bucket(&mut inner, t.intended).latency,
            t.latency(),
        );
        self.bucket(&mut inner, t.intended).ok += 1;
        if write {
            if let Some(acks) = inner.acks.as_mut() {
                acks.push(Ack {
                    sent: t.intended,
                    acked: t.done,
                });
            }
        }
        if !measured {
            return;
        }
        record_duration(&mut inner.latency, t.latency());
        record_duration(&mut inner.service, t.service());
        record_duration(
            inner.per_op.entry(op).or_insert_with(histogram),
            t.latency(),
        );
        if let Some(o) = outcome {
            *inner.outcomes.entry(o).or_insert(0) += 1;
        }
    }

    /// Records a failed operation.
    pub fn err(&self, t: Timing, e: &OpError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let measured = self.measured(t.intended);
        let mut inner = self.lock();
        self.bucket(&mut inner, t.intended).errors += 1;
        if !measured {
            return;
        }
        *inner.errors.entry(e.kind.clone()).or_insert(0) += 1;
        if !inner.first_errors.contains_key(&e.kind) {
            inner
                .first_errors
                .insert(e.kind.clone(), e.message.chars().take(200).collect());
        }
    }

    /// Records the revision of an acknowledged renewal (watch).
    pub fn revision(&self, revision: u64, acked: Instant) {
        if let Some(r) = self.lock().revisions.as_mut() {
            r.push((revision, acked));
        }
    }

    /// Counts delivered watch events (for the progress line).
    pub fn events(&self, n: u64) {
        self.events.fetch_add(n, Ordering::Relaxed);
    }

    /// (successes, errors, watch events) so far, whole run.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.events.load(Ordering::Relaxed),
        )
    }

    /// p99 of the measured window so far, if anything was measured.
    pub fn p99_so_far(&self) -> Option<Duration> {
        let inner = self.lock();
        (!inner.latency.is_empty())
            .then(|| Duration::from_micros(inner.latency.value_at_quantile(0.99)))
    }

    /// Takes the totals out (at the end of the run).
    pub fn finish(&self) -> Totals {
        let mut inner = self.lock();
        Totals {
            latency: std::mem::replace(&mut inner.latency, histogram()),
            service: std::mem::replace(&mut inner.service, histogram()),
            per_op: std::mem::take(&mut inner.per_op),
            outcomes: std::mem::take(&mut inner.outcomes),
            errors: std::mem::take(&mut inner.errors),
            first_errors: std::mem::take(&mut inner.first_errors),
            series: std::mem::take(&mut inner.series),
            acks: inner.acks.take().unwrap_or_default(),
            revisions: inner.revisions.take().unwrap_or_default(),
        }
    }
}

/// Prints a progress line to stderr every second until `until`:
/// throughput over the last second, p99 of the measured window so far,
/// errors so far.
pub async fn progress(rec: std::sync::Arc<Recorder>, label: String, until: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut last_ok, mut last_err, mut last_ev) = rec.counts();
    let mut last_at = Instant::now();
    loop {
        tick.tick().await;
        let now = Instant::now();
        let (ok, err, ev) = rec.counts();
        let secs = now.duration_since(last_at).as_secs_f64().max(1e-3);
        let phase = if now < rec.measure_from() {
            "warmup".to_string()
        } else {
            match rec.p99_so_far() {
                Some(p) => format!("p99 {:.2} ms", p.as_secs_f64() * 1e3),
                None => "p99 -".to_string(),
            }
        };
        let events = if ev > 0 {
            format!(", {:.0} events/s", (ev - last_ev) as f64 / secs)
        } else {
            String::new()
        };
        eprintln!(
            "[{:>5.1}s] {label}: {:.0} ops/s, {phase}, errors {} (+{}){events}",
            now.duration_since(rec.start()).as_secs_f64(),
            (ok - last_ok) as f64 / secs,
            err,
            err - last_err,
        );
        (last_ok, last_err, last_ev, last_at) = (ok, err, ev, now);
        if now >= until {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_measured_window_counts_but_the_series_covers_everything() {
        let start = Instant::now();
        let rec = Recorder::new(
            start,
            Duration::from_secs(1),
            Duration::from_secs(1),
            Duration::from_millis(500),
        );
        let at = |ms: u64, lat: u64| {
            let intended = start + Duration::from_millis(ms);
            Timing {
                intended,
                sent: intended,
                done: intended + Duration::from_millis(lat),
            }
        };
        rec.ok("renew", at(100, 5), None, true); // warmup
        rec.ok("renew", at(1200, 2), Some("granted"), true);
        rec.err(at(1300, 1), &OpError::new("UNAVAILABLE", "x"));
        rec.ok("renew", at(2100, 9), None, true); // after the end
        let t = rec.finish();
        assert_eq!(t.latency.len(), 1);
        assert_eq!(t.outcomes.get("granted"), Some(&1));
        assert_eq!(t.errors.get("UNAVAILABLE"), Some(&1));
        let ok: u64 = t.series.iter().map(|b| b.ok).sum();
        assert_eq!(ok, 3);
        assert_eq!(t.series.len(), 5);
        assert_eq!(t.series[2].errors, 1);
    }
}
