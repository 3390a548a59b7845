//! The storm's report: the terminal table, the goals as ratios measured in
//! the same run, and the SVG plot (p99 launch latency against N, one line
//! per configuration, one panel per L).

use crate::storm::{Cell, Config, Run};
use serde::Serialize;
use std::fmt::Write as _;

/// One of issue 4's goals, as measured.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub goal: String,
    /// Where it was measured (L, N), which may differ from the goal's when
    /// the sweep did not hold that cell.
    pub measured_at: String,
    pub value: String,
    /// `None`: not measurable in this run, or not a goal (`info`).
    pub reached: Option<bool>,
    /// Not a goal of the issue: a ratio reported for insight.
    pub info: bool,
}

fn cell(cells: &[Cell], c: Config, l: usize, n: usize) -> Option<&Cell> {
    cells
        .iter()
        .find(|x| x.config == c && x.layers == l && x.containers == n && x.succeeded > 0)
}

/// The (L, N) to judge the N=100, L=50 goals at: that cell, else the
/// largest N and the L closest to 50 that the run holds for both configs.
fn goal_cell(cells: &[Cell], a: Config, b: Config) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize)> = None;
    for x in cells.iter().filter(|x| x.config == a) {
        if cell(cells, b, x.layers, x.containers).is_none() || x.succeeded == 0 {
            continue;
        }
        let key = |(l, n): (usize, usize)| {
            (
                n == 100 && l == 50,
                (l as i64 - 50).unsigned_abs() == 0,
                n.min(100),
                std::cmp::Reverse((l as i64 - 50).unsigned_abs()),
            )
        };
        let cand = (x.layers, x.containers);
        best = match best {
            Some(b) if key(cand) <= key(b) => Some(b),
            _ => Some(cand),
        };
    }
    best
}

fn at((l, n): (usize, usize)) -> String {
    format!("L={l}, N={n}")
}

/// The goals of issue 4, from the cells of one run.
pub fn goals(cells: &[Cell]) -> Vec<Goal> {
    let mut g = Vec::new();
    let unmeasured = |goal: &str, why: &str| Goal {
        goal: goal.into(),
        measured_at: "-".into(),
        value: why.into(),
        reached: None,
        info: false,
    };
    // Mount syscalls of fd: constant in L, at most 6.
    let fd: Vec<&Cell> = cells.iter().filter(|c| c.config == Config::Fd).collect();
    let goal = "fd: mount syscalls per container constant in L, at most 6";
    let counts: Vec<(usize, u32, u32)> = fd
        .iter()
        .filter_map(|c| Some((c.layers, c.mount_syscalls_min?, c.mount_syscalls_max?)))
        .collect();
    if counts.is_empty() {
        g.push(unmeasured(goal, "no fd container's count was logged"));
    } else {
        let lo = counts.iter().map(|c| c.1).min().unwrap_or(0);
        let hi = counts.iter().map(|c| c.2).max().unwrap_or(0);
        let mut ls: Vec<usize> = counts.iter().map(|c| c.0).collect();
        ls.sort();
        ls.dedup();
        g.push(Goal {
            goal: goal.into(),
            measured_at: format!("every fd container, L in {ls:?}"),
            value: format!("{lo}..{hi}"),
            reached: Some(lo == hi && hi <= 6),
            info: false,
        });
    }
    let goal = "fd: host mountinfo lines added per running container = 0";
    match goal_cell(cells, Config::Fd, Config::Fd) {
        Some(lc) => {
            let worst = fd
                .iter()
                .map(|c| c.mountinfo_added_per_container)
                .fold(0f64, f64::max);
            let c = cell(cells, Config::Fd, lc.0, lc.1);
            let v = c.map(|c| c.mountinfo_added_per_container).unwrap_or(0.0);
            g.push(Goal {
                goal: goal.into(),
                measured_at: at(lc),
                value: format!("{v:.2} (worst fd cell of the run: {worst:.2})"),
                reached: Some(v <= 0.0 && worst <= 0.0),
                info: false,
            });
        }
        None => g.push(unmeasured(goal, "no fd cell")),
    }
    let ratio_goal = |g: &mut Vec<Goal>,
                      goal: &str,
                      a: Config,
                      b: Config,
                      f: &dyn Fn(&Cell) -> f64,
                      ok: &dyn Fn(f64) -> bool,
                      unit: &str| {
        match goal_cell(cells, a, b) {
            Some(lc) => {
                let (Some(ca), Some(cb)) = (cell(cells, a, lc.0, lc.1), cell(cells, b, lc.0, lc.1))
                else {
                    return;
                };
                let (va, vb) = (f(ca), f(cb));
                let r = if vb > 0.0 { va / vb } else { f64::NAN };
                g.push(Goal {
                    goal: goal.into(),
                    measured_at: at(lc),
                    value: format!(
                        "{} {va:.1}{unit} / {} {vb:.1}{unit} = {r:.2}",
                        a.name(),
                        b.name()
                    ),
                    reached: Some(r.is_finite() && ok(r)),
                    info: goal.starts_with("(info)"),
                });
            }
            None => g.push(unmeasured(
                goal,
                &format!(
                    "the run has no cell with both {} and {}",
                    a.name(),
                    b.name()
                ),
            )),
        }
    };
    let p99 = |c: &Cell| c.task.p99_ms;
    ratio_goal(
        &mut g,
        "p99 launch latency: per-layer / fd >= 5",
        Config::PerLayer,
        Config::Fd,
        &p99,
        &|r| r >= 5.0,
        " ms",
    );
    ratio_goal(
        &mut g,
        "(info) p99 rootfs construction time in the shim: per-layer / fd",
        Config::PerLayer,
        Config::Fd,
        &|c: &Cell| c.rootfs.p99_ms,
        &|r| r >= 5.0,
        " ms",
    );
    ratio_goal(
        &mut g,
        "p99 launch latency: fd / runc shim (no userns) <= 1",
        Config::Fd,
        Config::Runc,
        &p99,
        &|r| r <= 1.0,
        " ms",
    );
    ratio_goal(
        &mut g,
        "shim PSS per running container: fd / runc shim <= 0.25",
        Config::Fd,
        Config::Runc,
        &|c: &Cell| c.shim_pss_kib_per_container,
        &|r| r <= 0.25,
        " KiB",
    );
    // N=1: fd within 1.5x of plain, at every L.
    let goal = "N=1 launch latency (p50): fd / plain <= 1.5";
    let mut any = false;
    for c in cells
        .iter()
        .filter(|c| c.config == Config::Fd && c.containers == 1)
    {
        if let Some(p) = cell(cells, Config::Plain, c.layers, 1) {
            any = true;
            let r = c.task.p50_ms / p.task.p50_ms;
            g.push(Goal {
                goal: goal.into(),
                measured_at: format!("L={}, N=1 ({} samples each)", c.layers, c.task.samples),
                value: format!(
                    "fd {:.1} ms / plain {:.1} ms = {r:.2}",
                    c.task.p50_ms, p.task.p50_ms
                ),
                reached: Some(r <= 1.5),
                info: false,
            });
        }
    }
    if !any {
        g.push(unmeasured(
            goal,
            "the run has no N=1 cell with both fd and plain",
        ));
    }
    g
}

fn opt(v: Option<u32>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// The table, the failures, the leaks and the goals, on stdout.
pub fn print(run: &Run) {
    println!();
    for l in run.topology.header() {
        println!("{l}");
    }
    println!(
        "latencies in ms as `ctr` sees them (its start-up + connect, {:.1} ms, included); \
         task = `ctr tasks start -d` (task create + start), e2e = + `ctr containers create` (= `ctr run -d`)",
        run.ctr_overhead_ms
    );
    print!("{}", table(&run.cells));
    let failed: Vec<&Cell> = run.cells.iter().filter(|c| !c.errors.is_empty()).collect();
    if !failed.is_empty() {
        println!("\nfailed launches:");
        for c in failed {
            for (e, k) in &c.errors {
                println!(
                    "  L={} N={} {}: {k} x {e}",
                    c.layers,
                    c.containers,
                    c.config.name()
                );
            }
        }
    }
    let leaky: Vec<&Cell> = run.cells.iter().filter(|c| !c.leaks.is_empty()).collect();
    if !leaky.is_empty() {
        println!("\nleft behind after a round (the bench cleaned up what it could):");
        for c in leaky {
            for e in &c.leaks {
                println!(
                    "  L={} N={} {}: {e}",
                    c.layers,
                    c.containers,
                    c.config.name()
                );
            }
        }
    }
    println!("\ngoals (ratios measured in this run):");
    print!("{}", goals_text(&run.goals));
    println!(
        "run took {:.0} s; load average at start {}, at end {}",
        run.duration_s, run.loadavg_start, run.loadavg_end
    );
}

/// The run as Markdown: the machine, the table, failures, leaks, goals.
pub fn markdown(run: &Run) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Command: `{}`\n", run.command);
    let _ = writeln!(
        s,
        "{} run, {:.0} s; /proc/loadavg at start `{}`, at end `{}`.\n",
        if run.complete {
            "Complete"
        } else {
            "INCOMPLETE (interrupted)"
        },
        run.duration_s,
        run.loadavg_start,
        run.loadavg_end
    );
    for l in run.topology.header() {
        let _ = writeln!(s, "    {l}");
    }
    let _ = writeln!(
        s,
        "\nLatencies in ms as `ctr` sees them (its start-up + connect, {:.1} ms, included): \
         task = `ctr tasks start -d --null-io` (task create + task start), e2e = `ctr containers create` + that \
         (what `ctr run -d` does). Mount syscalls per container: the shim's count plus the one \
         `move_mount` inside the container (idshift only); rootfs: the rootfs construction time the shim \
         logs (idshift only). RSS/PSS: summed over the shim processes, \
         per running container. Host mountinfo lines added per running container and the \
         bench's share of the peak count the lines of the bench's own containerd (its directory), \
         so that other mounts on the host do not count; the peak's first figure is the whole host.\n",
        run.ctr_overhead_ms
    );
    s.push_str(&table(&run.cells));
    let failed: Vec<&Cell> = run.cells.iter().filter(|c| !c.errors.is_empty()).collect();
    if !failed.is_empty() {
        let _ = writeln!(s, "\nFailed launches:\n");
        for c in failed {
            for (e, k) in &c.errors {
                let _ = writeln!(
                    s,
                    "- L={} N={} {}: {k} x `{e}`",
                    c.layers,
                    c.containers,
                    c.config.name()
                );
            }
        }
    }
    let leaky: Vec<&Cell> = run.cells.iter().filter(|c| !c.leaks.is_empty()).collect();
    let _ = writeln!(
        s,
        "\nLeft behind after a round: {}",
        if leaky.is_empty() { "nothing." } else { "" }
    );
    for c in leaky {
        for e in &c.leaks {
            let _ = writeln!(
                s,
                "- L={} N={} {}: {e}",
                c.layers,
                c.containers,
                c.config.name()
            );
        }
    }
    let _ = writeln!(s, "\nGoals (ratios measured in this run):\n");
    for g in &run.goals {
        let verdict = match (g.info, g.reached) {
            (true, _) => "info (not a goal)",
            (false, Some(true)) => "reached",
            (false, Some(false)) => "**not reached**",
            (false, None) => "not measured",
        };
        let _ = writeln!(
            s,
            "- {verdict}: {}: {} ({})",
            g.goal, g.value, g.measured_at
        );
    }
    s
}

/// The goals as lines.
pub fn goals_text(goals: &[Goal]) -> String {
    let mut s = String::new();
    for g in goals {
        let verdict = match (g.info, g.reached) {
            (true, _) => "info",
            (false, Some(true)) => "reached",
            (false, Some(false)) => "NOT reached",
            (false, None) => "not measured",
        };
        let _ = writeln!(
            s,
            "  [{verdict}] {}: {} ({})",
            g.goal, g.value, g.measured_at
        );
    }
    s
}

/// The results table (Markdown-compatible pipes).
pub fn table(cells: &[Cell]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| L | N | config | ok | task p50 | p90 | p99 | max | e2e p50 | p99 | max | mount syscalls | rootfs p50/p99 | host mountinfo +/ctr | mountinfo peak: host (bench's) | mountinfo read p50/p99/max | shims | RSS/ctr | PSS/ctr |"
    );
    let _ = writeln!(
        s,
        "|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    );
    for c in cells {
        let sys = match (c.mount_syscalls_min, c.mount_syscalls_max) {
            (Some(a), Some(b)) if a == b => a.to_string(),
            (a, b) => {
                if a.is_none() {
                    "-".into()
                } else {
                    format!("{}..{}", opt(a), opt(b))
                }
            }
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {}/{} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {:.2} | {} ({}) | {:.2}/{:.2}/{:.2} ms | {:.0} | {:.1} MiB | {:.2} MiB |",
            c.layers,
            c.containers,
            c.config.name(),
            c.succeeded,
            c.launched,
            c.task.p50_ms,
            c.task.p90_ms,
            c.task.p99_ms,
            c.task.max_ms,
            c.e2e.p50_ms,
            c.e2e.p99_ms,
            c.e2e.max_ms,
            sys,
            if c.rootfs.samples > 0 {
                format!("{:.1}/{:.1}", c.rootfs.p50_ms, c.rootfs.p99_ms)
            } else {
                "-".to_string()
            },
            c.mountinfo_added_per_container,
            c.mountinfo_peak,
            c.mountinfo_peak_ours,
            c.mountinfo_read.p50_ms,
            c.mountinfo_read.p99_ms,
            c.mountinfo_read.max_ms,
            c.shim_processes,
            c.shim_rss_kib_per_container / 1024.0,
            c.shim_pss_kib_per_container / 1024.0,
        );
    }
    s
}

fn color(c: Config) -> &'static str {
    match c {
        Config::Fd => "#1b9e77",
        Config::Path => "#66a61e",
        Config::PerLayer => "#d95f02",
        Config::Plain => "#7570b3",
        Config::Runc => "#e7298a",
        Config::Crun => "#a6761d",
        Config::FdGroup => "#1f78b4",
        Config::RuncGroup => "#666666",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" upper bound of an axis: 1, 2 or 5 x 10^k at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

/// The SVG: one panel per L, p99 task launch latency (ms) against N (N on
/// a log axis), one line per configuration, a legend, the topology.
pub fn svg(run: &Run) -> String {
    let mut layers: Vec<usize> = run.cells.iter().map(|c| c.layers).collect();
    layers.sort();
    layers.dedup();
    let mut ns: Vec<usize> = run.cells.iter().map(|c| c.containers).collect();
    ns.sort();
    ns.dedup();
    let mut configs: Vec<Config> = run.cells.iter().map(|c| c.config).collect();
    configs.sort();
    configs.dedup();
    let cols = layers.len().clamp(1, 2);
    let rows = layers.len().div_ceil(cols).max(1);
    let (pw, ph) = (520.0, 340.0);
    let (ml, mr, mt, mb) = (70.0, 20.0, 40.0, 50.0);
    let header_h = 110.0;
    let legend_h = 24.0 * configs.len().div_ceil(2) as f64 + 16.0;
    let width = pw * cols as f64;
    let height = header_h + ph * rows as f64 + legend_h;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="22" font-size="16" font-weight="bold">idshift launch storm: p99 launch latency against N containers launched at once</text>"#
    );
    let _ = writeln!(
        s,
        r##"<text x="10" y="{}" fill="#444">latency = task create to task start returned, as `ctr tasks start -d` sees it (ctr start-up + connect, {:.0} ms, included){}</text>"##,
        42.0 + 16.0 * run.topology.header().len() as f64,
        run.ctr_overhead_ms,
        if run.complete { "" } else { "; INCOMPLETE run" }
    );
    for (i, l) in run.topology.header().iter().enumerate() {
        let _ = writeln!(
            s,
            r##"<text x="10" y="{}" fill="#444">{}</text>"##,
            42.0 + 16.0 * i as f64,
            esc(l)
        );
    }
    let xmin = (*ns.first().unwrap_or(&1)).max(1) as f64;
    let xmax = (*ns.last().unwrap_or(&1)).max(1) as f64;
    for (k, &l) in layers.iter().enumerate() {
        let (ox, oy) = (pw * (k % cols) as f64, header_h + ph * (k / cols) as f64);
        let (x0, x1, y0, y1) = (ox + ml, ox + pw - mr, oy + ph - mb, oy + mt);
        let cells: Vec<&Cell> = run
            .cells
            .iter()
            .filter(|c| c.layers == l && c.succeeded > 0)
            .collect();
        let ymax = nice_ceiling(cells.iter().map(|c| c.task.p99_ms).fold(0.0, f64::max));
        let xpos = |n: usize| {
            if xmax <= xmin {
                (x0 + x1) / 2.0
            } else {
                x0 + ((n.max(1) as f64).ln() - xmin.ln()) / (xmax.ln() - xmin.ln()) * (x1 - x0)
            }
        };
        let ypos = |v: f64| y0 - v / ymax * (y0 - y1);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" font-size="14" font-weight="bold" text-anchor="middle">L = {l} layer{}</text>"#,
            (x0 + x1) / 2.0,
            oy + 24.0,
            if l == 1 { "" } else { "s" }
        );
        // Grid and y ticks.
        for t in 0..=5 {
            let v = ymax * t as f64 / 5.0;
            let y = ypos(v);
            let _ = writeln!(
                s,
                r##"<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
                x0 - 6.0,
                y + 4.0,
                if ymax >= 10.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            );
        }
        for &n in &ns {
            let x = xpos(n);
            let _ = writeln!(
                s,
                r##"<line x1="{x}" y1="{y0}" x2="{x}" y2="{y1}" stroke="#eee"/><text x="{x}" y="{}" text-anchor="middle">{n}</text>"##,
                y0 + 16.0
            );
        }
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#000"/><line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#000"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">N (containers launched at once, log scale)</text>"#,
            (x0 + x1) / 2.0,
            y0 + 36.0
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate({},{}) rotate(-90)" text-anchor="middle">p99 launch latency (ms)</text>"#,
            ox + 16.0,
            (y0 + y1) / 2.0
        );
        for &c in &configs {
            let mut pts: Vec<(f64, f64, &Cell)> = cells
                .iter()
                .filter(|x| x.config == c)
                .map(|x| (xpos(x.containers), ypos(x.task.p99_ms), *x))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            if pts.is_empty() {
                continue;
            }
            let path: Vec<String> = pts
                .iter()
                .map(|(x, y, _)| format!("{x:.1},{y:.1}"))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
                color(c),
                path.join(" ")
            );
            for (x, y, cell) in &pts {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{}"><title>{} L={} N={}: p99 {:.0} ms, p50 {:.0} ms, {}/{} ok</title></circle>"#,
                    color(c),
                    esc(c.label()),
                    cell.layers,
                    cell.containers,
                    cell.task.p99_ms,
                    cell.task.p50_ms,
                    cell.succeeded,
                    cell.launched
                );
            }
        }
    }
    let ly = header_h + ph * rows as f64 + 8.0;
    for (i, &c) in configs.iter().enumerate() {
        let (x, y) = (
            20.0 + (i % 2) as f64 * 520.0,
            ly + 24.0 * (i / 2) as f64 + 12.0,
        );
        let failed = !run.cells.iter().any(|x| x.config == c && x.succeeded > 0);
        let note = if failed {
            ": no launch succeeded (see the report)"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            x + 30.0,
            color(c),
            x + 38.0,
            y + 4.0,
            esc(&format!("{}{note}", c.label()))
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(17.0), 20.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
        assert_eq!(nice_ceiling(101.0), 200.0);
    }
}
