//! The side-by-side table: JSON reports of runs against Leasehold and etcd
//! in, one Markdown table out, with ratios ours / etcd. Runs with the same
//! workload, clients and rate are repeats (the script alternates the two
//! systems so that drift on a shared machine hits both); each cell is the
//! median over the repeats.

use super::config::TargetKind;
use super::report::{fmt_ms, Report};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// Reads every `*.json` report in `paths` (files, or directories whose
/// `.json` files are read, sorted by name).
pub fn load(paths: &[impl AsRef<Path>]) -> Result<Vec<Report>, String> {
    let mut files = Vec::new();
    for p in paths {
        let p = p.as_ref();
        if p.is_dir() {
            let mut found: Vec<_> = std::fs::read_dir(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|f| f.extension().is_some_and(|x| x == "json"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.to_path_buf());
        }
    }
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            serde_json::from_str::<Report>(&text)
                .map_err(|e| format!("{} is not a bench report: {e}", f.display()))
        })
        .collect()
}

/// The median of `v` (0 for none).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Medians of one system's repeats of one configuration.
#[derive(Debug, Clone, Default)]
pub struct Cell {
    /// Number of repeats.
    pub runs: usize,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// Median latency, ms.
    pub p50: f64,
    /// 99th percentile latency, ms.
    pub p99: f64,
    /// Errors per run.
    pub errors: f64,
    /// Server CPU (every listed server process together), percent of one
    /// core; `None` when some run did not measure every server.
    pub cpu_percent: Option<f64>,
    /// Server CPU time per successful operation, ms.
    pub cpu_ms_per_op: Option<f64>,
}

/// Server CPU of a run, percent of one core over all its servers; `None`
/// when there were none or one was missing at an end of the window (a
/// failover's killed leader).
fn server_cpu(r: &Report) -> Option<f64> {
    if r.servers.is_empty() {
        return None;
    }
    r.servers.iter().map(|s| s.cpu_percent).sum()
}

fn cell(reports: &[&Report]) -> Option<Cell> {
    if reports.is_empty() {
        return None;
    }
    let m = |f: &dyn Fn(&Report) -> f64| median(reports.iter().map(|r| f(r)).collect());
    Some(Cell {
        runs: reports.len(),
        ops_per_sec: m(&|r| r.ops_per_sec),
        p50: m(&|r| r.latency_ms.p50),
        p99: m(&|r| r.latency_ms.p99),
        errors: m(&|r| r.errors_total as f64),
        cpu_percent: all(reports, server_cpu).map(median),
        cpu_ms_per_op: all(reports, |r| cpu_ms_per_op(server_cpu(r)?, r.ops_per_sec)).map(median),
    })
}

/// CPU milliseconds per operation from CPU in percent of one core and
/// operations per second; `None` without operations.
fn cpu_ms_per_op(cpu_percent: f64, ops_per_sec: f64) -> Option<f64> {
    (ops_per_sec > 0.0).then(|| cpu_percent / 100.0 / ops_per_sec * 1000.0)
}

/// `f` of every report, or `None` if it is `None` for any.
fn all(reports: &[&Report], f: impl Fn(&Report) -> Option<f64>) -> Option<Vec<f64>> {
    reports.iter().map(|r| f(r)).collect()
}

/// Sort key of a workload (the order of the issue).
fn order(w: &str) -> usize {
    [
        "renew",
        "acquire",
        "mixed",
        "keepalive",
        "watch",
        "failover",
        "restart",
        "scale",
    ]
    .iter()
    .position(|x| *x == w)
    .unwrap_or(99)
}

/// Configuration of a run, for grouping repeats.
type Key = (usize, String, usize, String);

fn key(r: &Report) -> Key {
    (
        order(&r.workload),
        r.workload.clone(),
        r.clients,
        r.rate.map_or("closed".into(), |x| format!("{x:.0}/s")),
    )
}

fn ratio(ours: f64, theirs: f64) -> String {
    if theirs > 0.0 && ours > 0.0 {
        format!("{:.2}x", ours / theirs)
    } else {
        "-".into()
    }
}

/// The Markdown table of the load workloads, then the watch delays and the
/// failover figures if there are any.
pub fn render(reports: &[Report]) -> String {
    let mut groups: BTreeMap<Key, (Vec<&Report>, Vec<&Report>)> = BTreeMap::new();
    for r in reports.iter().filter(|r| r.workload != "scale") {
        let g = groups.entry(key(r)).or_default();
        match r.target {
            TargetKind::Leasehold => g.0.push(r),
            TargetKind::Etcd => g.1.push(r),
        }
    }
    let mut o = String::new();
    let _ = writeln!(
        o,
        "| workload | clients | load | runs | leasehold ops/s | etcd ops/s | ops ours/etcd | leasehold p50 ms | etcd p50 ms | p50 ours/etcd | leasehold p99 ms | etcd p99 ms | p99 ours/etcd | errors (ours, etcd) |"
    );
    let _ = writeln!(
        o,
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    let dash = || "-".to_string();
    for ((_, workload, clients, load), (ours, theirs)) in &groups {
        let (a, b) = (cell(ours), cell(theirs));
        let f = |c: &Option<Cell>, g: &dyn Fn(&Cell) -> String| c.as_ref().map_or_else(dash, g);
        let _ = writeln!(
            o,
            "| {workload} | {clients} | {load} | {}+{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}, {} |",
            a.as_ref().map_or(0, |c| c.runs),
            b.as_ref().map_or(0, |c| c.runs),
            f(&a, &|c| format!("{:.0}", c.ops_per_sec)),
            f(&b, &|c| format!("{:.0}", c.ops_per_sec)),
            match (&a, &b) {
                (Some(a), Some(b)) => ratio(a.ops_per_sec, b.ops_per_sec),
                _ => dash(),
            },
            f(&a, &|c| fmt_ms(c.p50)),
            f(&b, &|c| fmt_ms(c.p50)),
            match (&a, &b) {
                (Some(a), Some(b)) => ratio(a.p50, b.p50),
                _ => dash(),
            },
            f(&a, &|c| fmt_ms(c.p99)),
            f(&b, &|c| fmt_ms(c.p99)),
            match (&a, &b) {
                (Some(a), Some(b)) => ratio(a.p99, b.p99),
                _ => dash(),
            },
            f(&a, &|c| format!("{:.0}", c.errors)),
            f(&b, &|c| format!("{:.0}", c.errors)),
        );
    }
    // Server CPU, when the runs measured it (`--server-pids`): the cost of
    // an operation, which on a shared machine drifts less than throughput.
    let cpu_rows: Vec<_> = groups
        .iter()
        .map(|(k, (ours, theirs))| (k, cell(ours), cell(theirs)))
        .filter(|(_, a, b)| {
            a.as_ref().is_some_and(|c| c.cpu_ms_per_op.is_some())
                || b.as_ref().is_some_and(|c| c.cpu_ms_per_op.is_some())
        })
        .collect();
    if !cpu_rows.is_empty() {
        let _ = writeln!(
            o,
            "\n| server CPU | clients | load | leasehold CPU % | etcd CPU % | leasehold CPU ms/op | etcd CPU ms/op | CPU per op ours/etcd |"
        );
        let _ = writeln!(o, "|---|---:|---|---:|---:|---:|---:|---:|");
        let pct = |c: &Option<Cell>| {
            c.as_ref()
                .and_then(|c| c.cpu_percent)
                .map_or_else(dash, |v| format!("{v:.0}"))
        };
        let per_op = |c: &Option<Cell>| c.as_ref().and_then(|c| c.cpu_ms_per_op);
        for ((_, workload, clients, load), a, b) in cpu_rows {
            let _ = writeln!(
                o,
                "| {workload} | {clients} | {load} | {} | {} | {} | {} | {} |",
                pct(&a),
                pct(&b),
                per_op(&a).map_or_else(dash, |v| format!("{v:.3}")),
                per_op(&b).map_or_else(dash, |v| format!("{v:.3}")),
                match (per_op(&a), per_op(&b)) {
                    (Some(x), Some(y)) => ratio(x, y),
                    _ => dash(),
                }
            );
        }
    }
    let watches: Vec<&Report> = reports.iter().filter(|r| r.watch.is_some()).collect();
    if !watches.is_empty() {
        let _ = writeln!(
            o,
            "\n| watch delay (ack to delivery) | clients | watchers | p50 ms | p99 ms | max ms | delivered / expected |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---|");
        for r in watches {
            if let Some(w) = &r.watch {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} | {} | {} / {} |",
                    r.target.as_str(),
                    r.clients,
                    w.watchers,
                    fmt_ms(w.delay_ms.p50),
                    fmt_ms(w.delay_ms.p99),
                    fmt_ms(w.delay_ms.max),
                    w.delivered,
                    w.expected
                );
            }
        }
    }
    let restarts: Vec<&Report> = reports.iter().filter(|r| r.restart.is_some()).collect();
    if !restarts.is_empty() {
        let _ = writeln!(
            o,
            "\n| rolling restart | clients | server | was leader | exit after SIGTERM, ms | first write after SIGTERM, ms | longest gap between writes, ms | back serving, ms | errors |"
        );
        let _ = writeln!(o, "|---|---:|---:|---|---:|---:|---:|---:|---:|");
        for r in restarts {
            if let Some(x) = &r.restart {
                for st in &x.steps {
                    let _ = writeln!(
                        o,
                        "| {} | {} | {} | {} | {:.0} | {} | {:.0} | {:.0} | {} |",
                        r.target.as_str(),
                        r.clients,
                        st.id,
                        if st.was_leader { "yes" } else { "no" },
                        st.exit_ms,
                        st.first_write_after_stop_ms
                            .map_or("none".into(), |v| format!("{v:.0}")),
                        st.longest_gap_ms,
                        st.ready_ms,
                        st.errors
                    );
                }
            }
        }
    }
    let failovers: Vec<&Report> = reports.iter().filter(|r| r.failover.is_some()).collect();
    if !failovers.is_empty() {
        let _ = writeln!(
            o,
            "\n| failover | clients | first probe acknowledged after the kill, ms | first client write after the kill, ms | longest gap between writes, ms | errors after the kill |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|");
        for r in failovers {
            if let Some(f) = &r.failover {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {:.0} | {} |",
                    r.target.as_str(),
                    r.clients,
                    f.probe_first_success_ms
                        .map_or("none".into(), |v| format!("{v:.0}")),
                    f.first_success_after_kill_ms
                        .map_or("none".into(), |v| format!("{v:.0}")),
                    f.longest_gap_ms,
                    f.errors_after_kill
                );
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn ratio_guards_zero() {
        assert_eq!(ratio(3.0, 1.5), "2.00x");
        assert_eq!(ratio(1.0, 0.0), "-");
    }

    #[test]
    fn cpu_per_operation() {
        // One and a half cores for 1,500 operations a second: 1 ms each.
        assert_eq!(cpu_ms_per_op(150.0, 1500.0), Some(1.0));
        let v = cpu_ms_per_op(40.0, 10_000.0).expect("some");
        assert!((v - 0.04).abs() < 1e-12, "{v}");
        assert_eq!(cpu_ms_per_op(150.0, 0.0), None);
    }
}
