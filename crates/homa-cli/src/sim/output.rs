//! The summary tables and the JSON, CSV and SVG files of `homa sim`.

use core::fmt::Write as _;
use std::path::{Path, PathBuf};

use homa_eval::plot::{slowdown_svg, Series};
use homa_eval::report::{Csv, Json};
use homa_sim::datacenter::{DcResult, WorkloadChoice};

use super::{Plan, RunRecord};

/// One line per run (for `--quiet`).
pub(crate) fn one_line(r: &DcResult) -> String {
    format!(
        "{} load {:.2}: short P50/P99 slowdown {:.2}/{:.2}, {} messages, {}; {:.1} s wall, {:.2} M events/s\n",
        r.config.workload,
        r.config.load,
        r.short.p50_slowdown,
        r.short.p99_slowdown,
        r.counters.measured_completed,
        if r.sustain.sustained { "sustained" } else { "NOT sustained" },
        r.wall.as_secs_f64(),
        r.events_per_s() / 1e6
    )
}

/// The table of every run: short-message and overall slowdowns, verdict and speed.
pub(crate) fn summary(records: &[RunRecord]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "summary (slowdown vs. the ideal time on an idle network; P50/P99):"
    );
    let _ = writeln!(
        out,
        "  {:<9} {:>5} {:>14} {:>14} {:>9} {:>9} {:>9} {:>10} {:>9} {:>8}",
        "workload",
        "load",
        "short P50/P99",
        "all P50/P99",
        "messages",
        "split",
        "capped",
        "sustained",
        "wall s",
        "Mev/s"
    );
    for rec in records {
        let r = &rec.result;
        let all = r.samples.overall();
        let _ = writeln!(
            out,
            "  {:<9} {:>5.2} {:>14} {:>14} {:>9} {:>9} {:>9} {:>10} {:>9.1} {:>8.2}",
            r.config.workload.to_string(),
            r.config.load,
            format!("{:.2}/{:.2}", r.short.p50_slowdown, r.short.p99_slowdown),
            format!("{:.2}/{:.2}", all.p50_slowdown, all.p99_slowdown),
            r.counters.measured_completed,
            r.counters.split,
            r.counters.capped,
            if r.sustain.sustained { "yes" } else { "no" },
            r.wall.as_secs_f64(),
            r.events_per_s() / 1e6
        );
    }
    out
}

/// Per workload: each load's verdict and the highest sustained load.
pub(crate) fn sweep_summary(
    sweeps: &[(WorkloadChoice, Vec<(f64, bool)>)],
    max: impl Fn(&[(f64, bool)]) -> Option<f64>,
) -> String {
    let mut out = String::from(
        "sweep: highest load sustained (over the window's second half: delivered/offered >= 0.95 \
         and backlog trend <= 5 % of the offered bytes; see homa_sim::datacenter::Sustain):\n",
    );
    for (w, verdicts) in sweeps {
        let list: Vec<String> = verdicts
            .iter()
            .map(|(l, ok)| format!("{:.0}%{}", l * 100.0, if *ok { "" } else { " (no)" }))
            .collect();
        let best = max(verdicts).map_or("none".to_string(), |l| format!("{:.0} %", l * 100.0));
        let _ = writeln!(out, "  {w}: {best}   [{}]", list.join(", "));
    }
    out
}

fn sweep_json(sweeps: &[(WorkloadChoice, Vec<(f64, bool)>)], records: &[RunRecord]) -> Json {
    let items: Vec<Json> = sweeps
        .iter()
        .map(|(w, verdicts)| {
            let loads: Vec<Json> = records
                .iter()
                .map(|r| &r.result)
                .filter(|r| r.config.workload == *w)
                .map(|r| {
                    Json::object()
                        .field("load", r.config.load)
                        .field("sustained", r.sustain.sustained)
                        .field("delivered_ratio", r.sustain.delivered_ratio)
                        .field("backlog_growth", r.sustain.backlog_growth)
                        .field("incomplete", r.sustain.incomplete)
                })
                .collect();
            Json::object()
                .field("workload", w.to_string())
                .field(
                    "max_sustained_load",
                    homa_sim::datacenter::max_sustained_load(verdicts),
                )
                .field("loads", Json::Array(loads))
        })
        .collect();
    Json::Array(items)
}

/// `PATH` with `suffix` inserted before the extension: `a/b.svg` → `a/b_p50.svg`.
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}{suffix}.{}", ext.to_string_lossy()),
        None => format!("{stem}{suffix}"),
    };
    path.with_file_name(name)
}

fn label(r: &DcResult, records: &[&RunRecord]) -> String {
    let workloads: std::collections::BTreeSet<String> = records
        .iter()
        .map(|x| x.result.config.workload.to_string())
        .collect();
    let loads: std::collections::BTreeSet<u64> = records
        .iter()
        .map(|x| (x.result.config.load * 1000.0).round() as u64)
        .collect();
    match (workloads.len() > 1, loads.len() > 1) {
        (true, false) => r.config.workload.to_string(),
        (false, true) => format!("{:.0} % load", r.config.load * 100.0),
        _ => format!("{} {:.0} %", r.config.workload, r.config.load * 100.0),
    }
}

/// The plots to draw: all runs in one, unless there are several workloads *and* several
/// loads (a sweep), then one per workload (file name suffix `_w1`, …).
fn plot_groups(records: &[RunRecord]) -> Vec<(String, Vec<&RunRecord>)> {
    let mut workloads: Vec<WorkloadChoice> = Vec::new();
    for r in records {
        if !workloads.contains(&r.result.config.workload) {
            workloads.push(r.result.config.workload);
        }
    }
    let several_loads = workloads.iter().any(|w| {
        records
            .iter()
            .filter(|r| r.result.config.workload == *w)
            .count()
            > 1
    });
    if workloads.len() > 1 && several_loads {
        workloads
            .iter()
            .map(|w| {
                let group = records
                    .iter()
                    .filter(|r| r.result.config.workload == *w)
                    .collect();
                (format!("_{w}").replace(':', "_"), group)
            })
            .collect()
    } else {
        vec![(String::new(), records.iter().collect())]
    }
}

fn plot(records: &[&RunRecord], p99: bool) -> String {
    let series: Vec<Series> = records
        .iter()
        .map(|rec| {
            let r = &rec.result;
            let points = r
                .buckets
                .iter()
                .map(|b| {
                    let v = if p99 { b.p99_slowdown } else { b.p50_slowdown };
                    (b.cumulative_fraction, v, b.max_size)
                })
                .collect();
            Series::new(label(r, records), points)
        })
        .collect();
    let first = &records[0].result.config;
    let title = format!(
        "homa sim: {} slowdown, {} hosts{}",
        if p99 { "P99" } else { "P50" },
        first.hosts(),
        if records.len() == 1 {
            format!(", {} at {:.0} % load", first.workload, first.load * 100.0)
        } else {
            String::new()
        }
    );
    slowdown_svg(&title, &series)
}

/// `homa bench`'s writer (`-`: stdout), with the error as the simulator's text.
fn write(path: &Path, what: &str, text: &str) -> Result<(), String> {
    crate::bench::report::write_to(path, what, text).map_err(|e| e.to_string())
}

/// Writes `--json`, `--csv` and `--plot`.
pub(crate) fn write_outputs(
    plan: &Plan,
    records: &[RunRecord],
    sweeps: &[(WorkloadChoice, Vec<(f64, bool)>)],
) -> Result<(), String> {
    if records.is_empty() {
        return Ok(());
    }
    if let Some(path) = &plan.json {
        let doc = if records.len() == 1 && sweeps.is_empty() {
            records[0].result.to_json(plan.deterministic)
        } else {
            let runs: Vec<Json> = records
                .iter()
                .map(|r| r.result.to_json(plan.deterministic))
                .collect();
            let mut doc = Json::object()
                .field("tool", "homa sim")
                .field("seed", records[0].result.config.seed)
                .field("runs", Json::Array(runs));
            if !sweeps.is_empty() {
                doc.insert("sweep", sweep_json(sweeps, records));
            }
            doc
        };
        write(path, "JSON report", &doc.to_pretty())?;
    }
    if let Some(path) = &plan.csv {
        let mut csv = Csv::new(DcResult::CSV_COLUMNS);
        for r in records {
            r.result.csv_rows(&mut csv);
        }
        write(path, "CSV report", csv.as_str())?;
    }
    if let Some(path) = &plan.plot {
        for (suffix, group) in plot_groups(records) {
            write(&with_suffix(path, &suffix), "plot", &plot(&group, true))?;
            write(
                &with_suffix(path, &format!("{suffix}_p50")),
                "plot",
                &plot(&group, false),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_goes_before_the_extension() {
        assert_eq!(
            with_suffix(Path::new("a/b.svg"), "_p50"),
            PathBuf::from("a/b_p50.svg")
        );
        assert_eq!(
            with_suffix(Path::new("plot"), "_p50"),
            PathBuf::from("plot_p50")
        );
    }
}
