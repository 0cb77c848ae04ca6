//! SVG charts drawn from bench reports with plotters (feature `plots`).
//!
//! Only the SVG backend is used: it writes text as SVG `<text>` elements and
//! needs no font files, fontconfig or image libraries, so the charts can be
//! made on a bare machine.
//!
//! - `bench-<workload>-latency.svg`: p50 and p99 latency against throughput,
//!   one point per concurrency (median over repeats), one colour per system.
//! - `bench-failover.svg`: latency (p99 and max per bucket) and successful
//!   operations per second over time, with the kill at t = 0.

use super::config::TargetKind;
use super::report::Report;
use super::table::median;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const WIDTH: u32 = 900;
const HEIGHT: u32 = 560;

fn colour(t: TargetKind) -> RGBColor {
    match t {
        TargetKind::Leasehold => RGBColor(31, 119, 180),
        TargetKind::Etcd => RGBColor(214, 39, 40),
    }
}

fn err(e: impl std::fmt::Display) -> String {
    format!("cannot draw: {e}")
}

/// One point of a latency-against-throughput curve.
#[derive(Debug, Clone, Copy)]
struct Point {
    clients: usize,
    ops: f64,
    p50: f64,
    p99: f64,
}

/// Median point per (system, clients) of closed-loop runs of `workload`.
fn curves(reports: &[Report], workload: &str) -> BTreeMap<TargetKind, Vec<Point>> {
    let mut groups: BTreeMap<(TargetKind, usize), Vec<&Report>> = BTreeMap::new();
    for r in reports
        .iter()
        .filter(|r| r.workload == workload && r.rate.is_none() && r.ops > 0)
    {
        groups.entry((r.target, r.clients)).or_default().push(r);
    }
    let mut out: BTreeMap<TargetKind, Vec<Point>> = BTreeMap::new();
    for ((t, clients), rs) in groups {
        out.entry(t).or_default().push(Point {
            clients,
            ops: median(rs.iter().map(|r| r.ops_per_sec).collect()),
            p50: median(rs.iter().map(|r| r.latency_ms.p50).collect()),
            p99: median(rs.iter().map(|r| r.latency_ms.p99).collect()),
        });
    }
    out
}

/// Draws p50 and p99 against throughput for `workload`.
pub fn latency_vs_throughput(
    reports: &[Report],
    workload: &str,
    path: &Path,
) -> Result<bool, String> {
    let curves = curves(reports, workload);
    let points: Vec<Point> = curves.values().flatten().copied().collect();
    if points.is_empty() {
        return Ok(false);
    }
    let max_ops = points.iter().map(|p| p.ops).fold(0.0, f64::max) * 1.15;
    let lo = points
        .iter()
        .map(|p| p.p50)
        .fold(f64::MAX, f64::min)
        .max(0.01)
        / 1.5;
    let hi = points
        .iter()
        .map(|p| p.p99)
        .fold(0.0, f64::max)
        .max(lo * 2.0)
        * 1.5;
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{workload}: latency against throughput (closed loop; labels: clients)"),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(0.0..max_ops.max(1.0), (lo..hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("successful operations per second")
        .y_desc("latency, ms (log)")
        .draw()
        .map_err(err)?;
    for (t, pts) in &curves {
        let c = colour(*t);
        let name = t.as_str();
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (p.ops, p.p99)),
                c.stroke_width(2),
            ))
            .map_err(err)?
            .label(format!("{name} p99"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(DashedLineSeries::new(
                pts.iter().map(|p| (p.ops, p.p50)),
                6,
                4,
                c.stroke_width(1),
            ))
            .map_err(err)?
            .label(format!("{name} p50"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(1)));
        for p in pts {
            for v in [p.p50, p.p99] {
                chart
                    .draw_series(std::iter::once(Circle::new((p.ops, v), 3, c.filled())))
                    .map_err(err)?;
            }
            chart
                .draw_series(std::iter::once(Text::new(
                    p.clients.to_string(),
                    (p.ops, p.p99 * 1.12),
                    ("sans-serif", 13).into_font().color(&c),
                )))
                .map_err(err)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(true)
}

/// The most recent failover report of each system.
fn failovers(reports: &[Report]) -> BTreeMap<TargetKind, &Report> {
    let mut out: BTreeMap<TargetKind, &Report> = BTreeMap::new();
    for r in reports.iter().filter(|r| r.failover.is_some()) {
        match out.get(&r.target) {
            Some(prev) if prev.started_at >= r.started_at => {}
            _ => {
                out.insert(r.target, r);
            }
        }
    }
    out
}

fn failover_latency(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    runs: &BTreeMap<TargetKind, &Report>,
    (x0, x1): (f64, f64),
) -> Result<(), String> {
    let mut hi: f64 = 1.0;
    let mut lo: f64 = f64::MAX;
    for r in runs.values() {
        for p in r.series.iter().filter(|p| p.ok > 0) {
            hi = hi.max(p.max_ms);
            lo = lo.min(p.p99_ms);
        }
    }
    let lo = if lo == f64::MAX {
        0.1
    } else {
        (lo / 2.0).max(0.01)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(
            "failover: latency by send time (100 ms buckets); leader SIGKILLed at 0 s",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(65)
        .build_cartesian_2d(x0..x1, (lo..hi * 2.0).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .y_desc("latency, ms (log)")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(DashedLineSeries::new(
            vec![(0.0, lo), (0.0, hi * 2.0)],
            4,
            4,
            BLACK.stroke_width(1),
        ))
        .map_err(err)?;
    for (t, r) in runs {
        let kill = r.failover.as_ref().map_or(0.0, |f| f.kill_at_s);
        let c = colour(*t);
        let half = r.series_interval_ms as f64 / 2e3;
        // Buckets with no success break the line: a straight line across a
        // stall would draw latencies nobody saw.
        let segments = |f: fn(&super::report::SeriesPoint) -> f64| {
            let mut out: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
            for p in &r.series {
                let x = p.t_s + half - kill;
                if p.ok == 0 || x < x0 || x > x1 {
                    if out.last().is_some_and(|s| !s.is_empty()) {
                        out.push(Vec::new());
                    }
                    continue;
                }
                if let Some(s) = out.last_mut() {
                    s.push((x, f(p)));
                }
            }
            out.retain(|s| !s.is_empty());
            out
        };
        for (i, seg) in segments(|p| p.p99_ms).into_iter().enumerate() {
            chart
                .draw_series(seg.iter().map(|p| Circle::new(*p, 2, c.filled())))
                .map_err(err)?;
            let drawn = chart
                .draw_series(LineSeries::new(seg, c.stroke_width(2)))
                .map_err(err)?;
            if i == 0 {
                drawn
                    .label(format!("{} p99", t.as_str()))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                    });
            }
        }
        for (i, seg) in segments(|p| p.max_ms).into_iter().enumerate() {
            let single = seg.len() == 1;
            let drawn = chart
                .draw_series(DashedLineSeries::new(seg.clone(), 5, 3, c.stroke_width(1)))
                .map_err(err)?;
            if i == 0 {
                drawn
                    .label(format!("{} max", t.as_str()))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(1))
                    });
            }
            // A lone bucket (the stalled operations right at the kill) has
            // no line to show it: mark it.
            if single {
                chart
                    .draw_series(seg.iter().map(|p| Cross::new(*p, 4, c.stroke_width(2))))
                    .map_err(err)?;
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

fn failover_throughput(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    runs: &BTreeMap<TargetKind, &Report>,
    (x0, x1): (f64, f64),
) -> Result<(), String> {
    let rate = |r: &Report, ok: u64| ok as f64 * 1e3 / r.series_interval_ms.max(1) as f64;
    let hi = runs
        .values()
        .flat_map(|r| r.series.iter().map(move |p| rate(r, p.ok)))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption("successful writes per second", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(65)
        .build_cartesian_2d(x0..x1, 0.0..hi * 1.1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds from the kill")
        .y_desc("ops/s")
        .draw()
        .map_err(err)?;
    for (t, r) in runs {
        let kill = r.failover.as_ref().map_or(0.0, |f| f.kill_at_s);
        let half = r.series_interval_ms as f64 / 2e3;
        let c = colour(*t);
        chart
            .draw_series(LineSeries::new(
                r.series
                    .iter()
                    .map(|p| (p.t_s + half - kill, rate(r, p.ok)))
                    .filter(|(x, _)| *x >= x0 && *x <= x1),
                c.stroke_width(2),
            ))
            .map_err(err)?
            .label(t.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// Draws latency and throughput over time through the failover runs.
pub fn failover_timeline(reports: &[Report], path: &Path) -> Result<bool, String> {
    let runs = failovers(reports);
    if runs.is_empty() {
        return Ok(false);
    }
    // From 3 s before the kill to 9 s after it (etcd can hold writes for its
    // 7 s request timeout), or what the runs cover.
    let (mut x0, mut x1) = (-3.0f64, 9.0f64);
    for r in runs.values() {
        let kill = r.failover.as_ref().map_or(0.0, |f| f.kill_at_s);
        let end = r.series.len() as f64 * r.series_interval_ms as f64 / 1e3 - kill;
        x0 = x0.max(-kill);
        x1 = x1.min(end.max(1.0));
    }
    let root = SVGBackend::new(path, (WIDTH, HEIGHT + 140)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(((HEIGHT + 140) as f64 * 0.62) as u32);
    failover_latency(&top, &runs, (x0, x1))?;
    failover_throughput(&bottom, &runs, (x0, x1))?;
    root.present().map_err(err)?;
    Ok(true)
}

/// Draws every chart the reports allow into `out_dir`; returns the files.
pub fn all(reports: &[Report], out_dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let mut written = Vec::new();
    for w in ["renew", "acquire", "mixed", "watch"] {
        let path = out_dir.join(format!("bench-{w}-latency.svg"));
        if latency_vs_throughput(reports, w, &path)? {
            written.push(path);
        }
    }
    let path = out_dir.join("bench-failover.svg");
    if failover_timeline(reports, &path)? {
        written.push(path);
    }
    if written.is_empty() {
        return Err(
            "no report has anything to plot (closed-loop load runs or failover runs)".into(),
        );
    }
    Ok(written)
}
