//! The storm's report: the terminal table, the goals as ratios measured in
//! the same run, and the SVG plot (p99 launch latency against N, one line
//! per configuration, one panel per L).

use crate::storm::{Cell, Config, Kind, PhaseStats, Run, RunRm};
use serde::Serialize;
use std::fmt::Write as _;

/// One of the goals (issues 4 and 16), as measured.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    /// The issue that set it.
    pub issue: u32,
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

fn cell<'a>(cells: &'a [Cell], c: &str, l: usize, n: usize) -> Option<&'a Cell> {
    cells
        .iter()
        .find(|x| x.config.name() == c && x.layers == l && x.containers == n && x.succeeded > 0)
}

/// The (L, N) to judge a goal at: (L0, N0) itself, else the largest N up to
/// N0 and the L closest to L0 that the run holds for both configs.
fn goal_cell_at(
    cells: &[Cell],
    a: &str,
    b: &str,
    (l0, n0): (usize, usize),
) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize)> = None;
    for x in cells.iter().filter(|x| x.config.name() == a) {
        if cell(cells, b, x.layers, x.containers).is_none() || x.succeeded == 0 {
            continue;
        }
        let dl = |l: usize| (l as i64 - l0 as i64).unsigned_abs();
        let key = |(l, n): (usize, usize)| {
            (
                n == n0 && l == l0,
                dl(l) == 0,
                n.min(n0),
                std::cmp::Reverse(dl(l)),
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

/// [`goal_cell_at`] N=100, L=50.
fn goal_cell(cells: &[Cell], a: &str, b: &str) -> Option<(usize, usize)> {
    goal_cell_at(cells, a, b, (50, 100))
}

fn at((l, n): (usize, usize)) -> String {
    format!("L={l}, N={n}")
}

fn unmeasured(issue: u32, goal: &str, why: &str) -> Goal {
    Goal {
        issue,
        goal: goal.into(),
        measured_at: "-".into(),
        value: why.into(),
        reached: None,
        info: false,
    }
}

/// A ratio goal a / b of `f` at the goal cell (N=100, L=50 or nearest).
#[allow(clippy::too_many_arguments)]
fn ratio_goal(
    cells: &[Cell],
    g: &mut Vec<Goal>,
    issue: u32,
    goal: &str,
    a: &str,
    b: &str,
    f: &dyn Fn(&Cell) -> f64,
    ok: &dyn Fn(f64) -> bool,
    unit: &str,
    why: &dyn Fn(&Cell, &Cell) -> String,
) {
    match goal_cell(cells, a, b) {
        Some(lc) => {
            let (Some(ca), Some(cb)) = (cell(cells, a, lc.0, lc.1), cell(cells, b, lc.0, lc.1))
            else {
                return;
            };
            let (va, vb) = (f(ca), f(cb));
            let r = if vb > 0.0 { va / vb } else { f64::NAN };
            let reached = r.is_finite() && ok(r);
            let mut value = format!("{a} {va:.1}{unit} / {b} {vb:.1}{unit} = {r:.2}");
            if !reached {
                let w = why(ca, cb);
                if !w.is_empty() {
                    let _ = write!(value, "; {w}");
                }
            }
            g.push(Goal {
                issue,
                goal: goal.into(),
                measured_at: at(lc),
                value,
                reached: Some(reached),
                info: goal.starts_with("(info)"),
            });
        }
        None => g.push(unmeasured(
            issue,
            goal,
            &format!("the run has no cell with both {a} and {b}"),
        )),
    }
}

/// A cell's shim-side create as the shim logged it: the whole create p50
/// and p99, then the p50 of each phase.
pub fn breakdown(p: &PhaseStats) -> String {
    let (c, logged) = p.create();
    let mut s = format!(
        "shim create p50 {:.1} ms, p99 {:.1} ms{}: p50 userns {:.1}, rootfs {:.1}",
        c.p50_ms,
        c.p99_ms,
        if logged {
            ""
        } else {
            " (sum of the logged phases: this shim logs no total)"
        },
        p.userns.p50_ms,
        p.rootfs.p50_ms
    );
    if let Some(cg) = &p.cgroup {
        let _ = write!(s, ", cgroup {:.1}", cg.p50_ms);
    }
    let _ = write!(s, ", namespaces and init {:.1} ms", p.init.p50_ms);
    if let Some(t) = &p.total {
        let rest = t.p50_ms - p.sum.p50_ms;
        if rest >= 0.0 {
            let _ = write!(s, " (the rest of the create ~{rest:.1} ms)");
        } else {
            // idshift's steps run concurrently (DESIGN.md, "The create path").
            let _ = write!(
                s,
                " (the phases overlap: ~{:.1} ms of them ran at once)",
                -rest
            );
        }
    }
    s
}

/// The goals of issues 4 and 16, from the cells of one run.
pub fn goals(cells: &[Cell], run_rm: &[RunRm]) -> Vec<Goal> {
    let mut g = Vec::new();
    // Mount syscalls of fd: constant in L, at most 6.
    let fd: Vec<&Cell> = cells.iter().filter(|c| c.config.name() == "fd").collect();
    let goal = "fd: mount syscalls per container constant in L, at most 6";
    let counts: Vec<(usize, u32, u32)> = fd
        .iter()
        .filter_map(|c| Some((c.layers, c.mount_syscalls_min?, c.mount_syscalls_max?)))
        .collect();
    if counts.is_empty() {
        g.push(unmeasured(4, goal, "no fd container's count was logged"));
    } else {
        let lo = counts.iter().map(|c| c.1).min().unwrap_or(0);
        let hi = counts.iter().map(|c| c.2).max().unwrap_or(0);
        let mut ls: Vec<usize> = counts.iter().map(|c| c.0).collect();
        ls.sort();
        ls.dedup();
        g.push(Goal {
            issue: 4,
            goal: goal.into(),
            measured_at: format!("every fd container, L in {ls:?}"),
            value: format!("{lo}..{hi}"),
            reached: Some(lo == hi && hi <= 6),
            info: false,
        });
    }
    let goal = "fd: host mountinfo lines added per running container = 0";
    match goal_cell(cells, "fd", "fd") {
        Some(lc) => {
            let worst = fd
                .iter()
                .map(|c| c.mountinfo_added_per_container)
                .fold(0f64, f64::max);
            let c = cell(cells, "fd", lc.0, lc.1);
            let v = c.map(|c| c.mountinfo_added_per_container).unwrap_or(0.0);
            g.push(Goal {
                issue: 4,
                goal: goal.into(),
                measured_at: at(lc),
                value: format!("{v:.2} (worst fd cell of the run: {worst:.2})"),
                reached: Some(v <= 0.0 && worst <= 0.0),
                info: false,
            });
        }
        None => g.push(unmeasured(4, goal, "no fd cell")),
    }
    let p99 = |c: &Cell| c.task.p99_ms;
    let e2e99 = |c: &Cell| c.e2e.p99_ms;
    let none = |_: &Cell, _: &Cell| String::new();
    let rootfs_why = |a: &Cell, b: &Cell| {
        format!(
            "rootfs construction in the shim p99 {:.1} / {:.1} ms",
            a.rootfs.p99_ms, b.rootfs.p99_ms
        )
    };
    ratio_goal(
        cells,
        &mut g,
        4,
        "p99 launch latency: per-layer / fd >= 5",
        "per-layer",
        "fd",
        &p99,
        &|r| r >= 5.0,
        " ms",
        &rootfs_why,
    );
    ratio_goal(
        cells,
        &mut g,
        4,
        "(info) p99 rootfs construction time in the shim: per-layer / fd",
        "per-layer",
        "fd",
        &|c: &Cell| c.rootfs.p99_ms,
        &|r| r >= 5.0,
        " ms",
        &none,
    );
    ratio_goal(
        cells,
        &mut g,
        4,
        "p99 launch latency: fd / runc shim (no userns) <= 1",
        "fd",
        "runc",
        &p99,
        &|r| r <= 1.0,
        " ms",
        &none,
    );
    // N=1: fd within 1.5x of plain, at every L.
    let goal = "N=1 launch latency (p50): fd / plain <= 1.5";
    let mut any = false;
    for c in cells
        .iter()
        .filter(|c| c.config.name() == "fd" && c.containers == 1)
    {
        if let Some(p) = cell(cells, "plain", c.layers, 1) {
            any = true;
            let r = c.task.p50_ms / p.task.p50_ms;
            g.push(Goal {
                issue: 4,
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
            4,
            goal,
            "the run has no N=1 cell with both fd and plain",
        ));
    }
    // Issue 16.
    // N=1, L=60: the shim-side create p50 <= 10 ms, from the shim's log.
    let goal = "N=1, L=60: shim create p50 <= 10 ms (the shim's log)";
    let mut any = false;
    for name in ["fd", "fd@2.x"] {
        let Some(c) = cells
            .iter()
            .filter(|c| c.config.name() == name && c.containers == 1 && c.phases.is_some())
            .min_by_key(|c| ((c.layers as i64 - 60).unsigned_abs(), c.layers))
        else {
            continue;
        };
        let Some(p) = &c.phases else { continue };
        any = true;
        let (create, logged) = p.create();
        g.push(Goal {
            issue: 16,
            goal: goal.into(),
            measured_at: format!("{name}, L={}, N=1 ({} creates)", c.layers, p.samples),
            value: breakdown(p),
            reached: Some(logged && create.p50_ms <= 10.0),
            info: false,
        });
    }
    if !any {
        g.push(unmeasured(
            16,
            goal,
            "no N=1 cell of fd or fd@2.x with the shim's create lines",
        ));
    }
    // `ctr run --rm` wall time: idshift <= 0.7x the runc shim + runc.
    let goal = "N=1, L=60: `ctr run --rm` wall p50 fd / runc shim + runc <= 0.7";
    let mut any = false;
    for suffix in ["", "@2.x"] {
        let (a, b) = (format!("fd{suffix}"), format!("runc{suffix}"));
        let find = |n: &str| {
            run_rm
                .iter()
                .find(|r| r.config.name() == n && r.wall.samples > 0)
        };
        let (Some(ra), Some(rb)) = (find(&a), find(&b)) else {
            continue;
        };
        any = true;
        let r = ra.wall.p50_ms / rb.wall.p50_ms;
        let mut value = format!(
            "{a} {:.1} ms / {b} {:.1} ms = {r:.2}",
            ra.wall.p50_ms, rb.wall.p50_ms
        );
        if r > 0.7 {
            if let Some(p) = &ra.phases {
                let _ = write!(value, "; {a}'s {}", breakdown(p));
            }
        }
        g.push(Goal {
            issue: 16,
            goal: goal.into(),
            measured_at: format!(
                "L={}, {} and {} runs",
                ra.layers, ra.wall.samples, rb.wall.samples
            ),
            value,
            reached: Some(r <= 0.7),
            info: false,
        });
    }
    if !any {
        g.push(unmeasured(
            16,
            goal,
            "no --run-rm samples of both fd and runc (on one containerd)",
        ));
    }
    // The storm on containerd 2.x, against the runc shim with and without
    // user namespaces: p99 launch latency as issue 4's goals measure it,
    // the task (container record to task started; every configuration is
    // launched with the same `ctr run -d`), and e2e beside it.
    let storm_why = |a: &Cell, b: &Cell| {
        let mut w = format!(
            "e2e p99 {} {:.0} ms / {} {:.0} ms (the same `ctr run -d` for both)",
            a.config.name(),
            a.e2e.p99_ms,
            b.config.name(),
            b.e2e.p99_ms
        );
        if let Some(p) = &a.phases {
            let _ = write!(w, "; {}", breakdown(p));
        }
        w
    };
    let e2e_why = |a: &Cell, b: &Cell| {
        format!(
            "task p99 {:.0} / {:.0} ms of these; the rest of e2e is the container record and its snapshot (containerd) and `ctr`'s own work, the same for every configuration",
            a.task.p99_ms, b.task.p99_ms
        )
    };
    for (peer, what) in [
        (
            "runc-userns@2.x",
            "runc shim + runc with user namespaces (a range per container)",
        ),
        ("runc@2.x", "runc shim + runc (no userns)"),
    ] {
        ratio_goal(
            cells,
            &mut g,
            16,
            &format!("containerd 2.x storm: p99 launch latency (task) idshift fd / {what} <= 0.5"),
            "fd@2.x",
            peer,
            &p99,
            &|r| r <= 0.5,
            " ms",
            &storm_why,
        );
        ratio_goal(
            cells,
            &mut g,
            16,
            &format!("(info) containerd 2.x storm: e2e p99 idshift fd / {what}"),
            "fd@2.x",
            peer,
            &e2e99,
            &|r| r <= 0.5,
            " ms",
            &e2e_why,
        );
    }
    ratio_goal(
        cells,
        &mut g,
        16,
        "shim PSS per running container (one shim each): fd / Go runc shim <= 0.25",
        "fd",
        "runc",
        &|c: &Cell| c.shim_pss_kib_per_container,
        &|r| r <= 0.25,
        " KiB",
        &none,
    );
    g
}

fn opt(v: Option<u32>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// The configurations: name, what runs, on which containerd.
fn configs_text(run: &Run, prefix: &str) -> String {
    let mut s = String::new();
    for c in &run.configs {
        let _ = writeln!(
            s,
            "{prefix}{}: {} on {}: `{}`",
            c.name, c.label, c.containerd, c.launch
        );
    }
    s
}

fn verdict(g: &Goal, markdown: bool) -> &'static str {
    match (g.info, g.reached, markdown) {
        (true, _, _) => "info",
        (false, Some(true), _) => "reached",
        (false, Some(false), true) => "**not reached**",
        (false, Some(false), false) => "NOT reached",
        (false, None, _) => "not measured",
    }
}

/// The table, the failures, the leaks and the goals, on stdout.
pub fn print(run: &Run) {
    println!();
    for l in run.topology.header() {
        println!("{l}");
    }
    print!("{}", configs_text(run, "  "));
    println!(
        "latencies in ms; every launch is one `ctr run -d`: e2e = its wall time (ctr's start-up + connect, {:.1} ms, \
         included), task = from containerd's /containers/create event to its exit (task create + start)",
        run.ctr_overhead_ms
    );
    print!("{}", table(&run.cells));
    if !run.run_rm.is_empty() {
        println!("\n`ctr run --rm` of one container (runs `true`):");
        print!("{}", run_rm_table(&run.run_rm));
    }
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
    for r in run.run_rm.iter().filter(|r| !r.errors.is_empty()) {
        for (e, k) in &r.errors {
            println!(
                "  ctr run --rm L={} {}: {k} x {e}",
                r.layers,
                r.config.name()
            );
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
    for r in &run.run_rm {
        for e in &r.leaks {
            println!("  ctr run --rm {}: {e}", r.config.name());
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
    let _ = writeln!(
        s,
        "Each round and each `ctr run --rm` started once the CPUs were at most {:.0}% busy over {} ms (at most {} s of waiting): {:.0} s of waiting in all, {:.1} s the longest.\n",
        crate::storm::SETTLE_BUSY * 100.0,
        crate::storm::SETTLE_WINDOW.as_millis(),
        crate::storm::SETTLE_MAX.as_secs(),
        run.settled_s,
        run.settled_max_s
    );
    let _ = writeln!(
        s,
        "Load average (s since start: 1, 5, 15 min) during the run:\n"
    );
    let _ = writeln!(s, "```");
    for (t, l) in &run.loadavg_samples {
        let _ = writeln!(s, "{t:>5} s: {l}");
    }
    let _ = writeln!(s, "```\n");
    for l in run.topology.header() {
        let _ = writeln!(s, "    {l}");
    }
    let _ = writeln!(s, "\nConfigurations:\n");
    s.push_str(&configs_text(run, "- "));
    let _ = writeln!(
        s,
        "\nLatencies in ms. Every launch of every configuration is one `ctr run -d --null-io`: e2e = its wall \
         time as `ctr` sees it (its start-up + connect, {:.1} ms, included); task = the part after containerd made \
         the container's record (its `/containers/create` event's timestamp) to the command's exit: task create + \
         task start, and `ctr`'s exit. \
         Mount syscalls per container: the shim's count plus the one \
         `move_mount` inside the container (idshift only); shim create: the shim-side create as the idshift \
         shim logs it, p50 of the total [p99] and p50 of userns + rootfs (+ cgroup) + namespaces and init \
         (a total marked * is the phases' sum: that shim logs no total). RSS/PSS: summed over the shim processes, \
         per running container. Host mountinfo lines added per running container and the \
         bench's share of the peak count the lines of the bench's own containerd (its directory), \
         so that other mounts on the host do not count; the peak's first figure is the whole host.\n",
        run.ctr_overhead_ms
    );
    s.push_str(&table(&run.cells));
    if !run.run_rm.is_empty() {
        let _ = writeln!(
            s,
            "\n`ctr run --rm` of one container (it runs `true`), wall time in ms:\n"
        );
        s.push_str(&run_rm_table(&run.run_rm));
    }
    let failed: Vec<&Cell> = run.cells.iter().filter(|c| !c.errors.is_empty()).collect();
    let failed_rm: Vec<&RunRm> = run.run_rm.iter().filter(|r| !r.errors.is_empty()).collect();
    if !failed.is_empty() || !failed_rm.is_empty() {
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
        for r in failed_rm {
            for (e, k) in &r.errors {
                let _ = writeln!(
                    s,
                    "- ctr run --rm L={} {}: {k} x `{e}`",
                    r.layers,
                    r.config.name()
                );
            }
        }
    }
    let leaks: Vec<String> = run
        .cells
        .iter()
        .flat_map(|c| {
            c.leaks
                .iter()
                .map(move |e| format!("L={} N={} {}: {e}", c.layers, c.containers, c.config.name()))
        })
        .chain(run.run_rm.iter().flat_map(|r| {
            r.leaks
                .iter()
                .map(move |e| format!("ctr run --rm {}: {e}", r.config.name()))
        }))
        .collect();
    let _ = writeln!(
        s,
        "\nLeft behind after a round: {}",
        if leaks.is_empty() { "nothing." } else { "" }
    );
    for e in leaks {
        let _ = writeln!(s, "- {e}");
    }
    let _ = writeln!(s, "\nGoals (ratios measured in this run):\n");
    for g in &run.goals {
        let _ = writeln!(
            s,
            "- issue {}, {}: {}: {} ({})",
            g.issue,
            verdict(g, true),
            g.goal,
            g.value,
            g.measured_at
        );
    }
    s
}

/// The goals as lines.
pub fn goals_text(goals: &[Goal]) -> String {
    let mut s = String::new();
    for g in goals {
        let _ = writeln!(
            s,
            "  [issue {}: {}] {}: {} ({})",
            g.issue,
            verdict(g, false),
            g.goal,
            g.value,
            g.measured_at
        );
    }
    s
}

/// A shim create cell: total p50 [p99]: userns+rootfs(+cgroup)+init p50.
fn shim_create(p: Option<&PhaseStats>) -> String {
    let Some(p) = p else { return "-".into() };
    let (c, logged) = p.create();
    let mut s = format!(
        "{:.1}{} [{:.1}]: {:.1}+{:.1}",
        c.p50_ms,
        if logged { "" } else { "*" },
        c.p99_ms,
        p.userns.p50_ms,
        p.rootfs.p50_ms
    );
    if let Some(cg) = &p.cgroup {
        let _ = write!(s, "+{:.1}", cg.p50_ms);
    }
    let _ = write!(s, "+{:.1}", p.init.p50_ms);
    s
}

/// The `ctr run --rm` table.
pub fn run_rm_table(rows: &[RunRm]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| L | config | ok | wall p50 | p90 | max | shim create p50 [p99]: userns+rootfs(+cgroup)+init |"
    );
    let _ = writeln!(s, "|--:|---|--:|--:|--:|--:|---|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {}/{} | {:.0} | {:.0} | {:.0} | {} |",
            r.layers,
            r.config.name(),
            r.wall.samples,
            r.launched,
            r.wall.p50_ms,
            r.wall.p90_ms,
            r.wall.max_ms,
            shim_create(r.phases.as_ref())
        );
    }
    s
}

/// The results table (Markdown-compatible pipes).
pub fn table(cells: &[Cell]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| L | N | config | ok | task p50 | p90 | p99 | max | e2e p50 | p99 | max | mount syscalls | shim create p50 [p99]: userns+rootfs(+cgroup)+init | host mountinfo +/ctr | mountinfo peak: host (bench's) | mountinfo read p50/p99/max | shims | RSS/ctr | PSS/ctr |"
    );
    let _ = writeln!(
        s,
        "|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|"
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
        let task = |v: f64| {
            if c.task.samples > 0 {
                format!("{v:.0}")
            } else {
                "-".into()
            }
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {}/{} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {:.2} | {} ({}) | {:.2}/{:.2}/{:.2} ms | {:.0} | {:.1} MiB | {:.2} MiB |",
            c.layers,
            c.containers,
            c.config.name(),
            c.succeeded,
            c.launched,
            task(c.task.p50_ms),
            task(c.task.p90_ms),
            task(c.task.p99_ms),
            task(c.task.max_ms),
            c.e2e.p50_ms,
            c.e2e.p99_ms,
            c.e2e.max_ms,
            sys,
            shim_create(c.phases.as_ref()),
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

/// A configuration's line colour and dash (its 2.x variant dashed).
fn color(c: &Config) -> &'static str {
    const PEERS: [&str; 6] = [
        "#e6ab02", "#17becf", "#8c564b", "#bcbd22", "#9467bd", "#ff7f0e",
    ];
    match &c.kind {
        Kind::Fd => "#1b9e77",
        Kind::Path => "#66a61e",
        Kind::PerLayer => "#d95f02",
        Kind::Plain => "#7570b3",
        Kind::Runc => "#e7298a",
        Kind::Crun => "#a6761d",
        Kind::FdGroup => "#1f78b4",
        Kind::RuncGroup => "#666666",
        Kind::Peer(_) if c.name().starts_with("runc-userns") => "#e31a1c",
        Kind::Peer(_) => {
            let h = c
                .name()
                .bytes()
                .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
            PEERS[h % PEERS.len()]
        }
    }
}

fn dash(c: &Config) -> &'static str {
    match c.cd {
        crate::storm::Cd::Main => "",
        crate::storm::Cd::V2 => r#" stroke-dasharray="6,3""#,
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

/// The SVG: one panel per L, p99 e2e launch latency (ms) against N (N on
/// a log axis), one line per configuration, a legend, the topology.
pub fn svg(run: &Run) -> String {
    let mut layers: Vec<usize> = run.cells.iter().map(|c| c.layers).collect();
    layers.sort();
    layers.dedup();
    let mut ns: Vec<usize> = run.cells.iter().map(|c| c.containers).collect();
    ns.sort();
    ns.dedup();
    let mut configs: Vec<Config> = run.cells.iter().map(|c| c.config.clone()).collect();
    configs.sort();
    configs.dedup();
    let cols = layers.len().clamp(1, 2);
    let rows = layers.len().div_ceil(cols).max(1);
    let (pw, ph) = (520.0, 340.0);
    let (ml, mr, mt, mb) = (70.0, 20.0, 40.0, 50.0);
    let header_h = 110.0;
    let legend_h = 24.0 * configs.len().div_ceil(2) as f64 + 16.0;
    // Wide enough for the two-column legend and the header lines.
    let width = (pw * cols as f64).max(1040.0);
    // The shim-side create phases: one bar per configuration and N at the
    // L closest to 60 among the cells with the shim's lines.
    let bar_l = run
        .cells
        .iter()
        .filter(|c| c.phases.is_some())
        .map(|c| c.layers)
        .min_by_key(|&l| ((l as i64 - 60).unsigned_abs(), l));
    let mut bars: Vec<&Cell> = run
        .cells
        .iter()
        .filter(|c| Some(c.layers) == bar_l && c.phases.is_some())
        .collect();
    bars.sort_by(|a, b| (&a.config, a.containers).cmp(&(&b.config, b.containers)));
    let bars_h = if bars.is_empty() {
        0.0
    } else {
        70.0 + 20.0 * bars.len() as f64 + 30.0
    };
    let height = header_h + ph * rows as f64 + legend_h + bars_h;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="22" font-size="16" font-weight="bold">idshift launch storm: p99 launch latency (e2e) against N containers launched at once</text>"#
    );
    let _ = writeln!(
        s,
        r##"<text x="10" y="{}" fill="#444">latency = e2e: container create + task create + start, as `ctr run -d` sees it (ctr start-up + connect, {:.0} ms, included){}</text>"##,
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
        let ymax = nice_ceiling(cells.iter().map(|c| c.e2e.p99_ms).fold(0.0, f64::max));
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
            r#"<text transform="translate({},{}) rotate(-90)" text-anchor="middle">p99 launch latency, e2e (ms)</text>"#,
            ox + 16.0,
            (y0 + y1) / 2.0
        );
        for c in &configs {
            let mut pts: Vec<(f64, f64, &Cell)> = cells
                .iter()
                .filter(|x| x.config == *c)
                .map(|x| (xpos(x.containers), ypos(x.e2e.p99_ms), *x))
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
                r#"<polyline fill="none" stroke="{}" stroke-width="2"{} points="{}"/>"#,
                color(c),
                dash(c),
                path.join(" ")
            );
            for (x, y, cell) in &pts {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{}"><title>{} L={} N={}: e2e p99 {:.0} ms, p50 {:.0} ms, {}/{} ok</title></circle>"#,
                    color(c),
                    esc(&c.label()),
                    cell.layers,
                    cell.containers,
                    cell.e2e.p99_ms,
                    cell.e2e.p50_ms,
                    cell.succeeded,
                    cell.launched
                );
            }
        }
    }
    let ly = header_h + ph * rows as f64 + 8.0;
    for (i, c) in configs.iter().enumerate() {
        let (x, y) = (
            20.0 + (i % 2) as f64 * 520.0,
            ly + 24.0 * (i / 2) as f64 + 12.0,
        );
        let failed = !run.cells.iter().any(|x| x.config == *c && x.succeeded > 0);
        let note = if failed {
            ": no launch succeeded (see the report)"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="3"{}/><text x="{}" y="{}">{}</text>"#,
            x + 30.0,
            color(c),
            dash(c),
            x + 38.0,
            y + 4.0,
            esc(&format!("{}: {}{note}", c.name(), c.label()))
        );
    }
    if let (Some(l), false) = (bar_l, bars.is_empty()) {
        let top = header_h + ph * rows as f64 + legend_h;
        let _ = writeln!(
            s,
            r#"<text x="10" y="{}" font-size="14" font-weight="bold">Shim-side create, p50 of each phase as the idshift shim logs it (L = {l}; ms)</text>"#,
            top + 20.0
        );
        let (x0, x1) = (170.0, width - 120.0);
        let vmax = nice_ceiling(
            bars.iter()
                .filter_map(|c| c.phases.as_ref())
                .map(|p| p.create().0.p50_ms.max(p.sum.p50_ms))
                .fold(0.0, f64::max),
        );
        let xs = |v: f64| x0 + v / vmax * (x1 - x0);
        let y_axis = top + 50.0 + 20.0 * bars.len() as f64;
        for t in 0..=5 {
            let v = vmax * t as f64 / 5.0;
            let x = xs(v);
            let _ = writeln!(
                s,
                r##"<line x1="{x}" y1="{}" x2="{x}" y2="{y_axis}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{}</text>"##,
                top + 40.0,
                y_axis + 14.0,
                if vmax >= 10.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            );
        }
        const PHASES: [(&str, &str); 5] = [
            ("userns", "#1f78b4"),
            ("rootfs", "#33a02c"),
            ("cgroup", "#ff7f00"),
            ("namespaces and init", "#6a3d9a"),
            ("rest of the create (total - phases)", "#b2b2b2"),
        ];
        for (i, c) in bars.iter().enumerate() {
            let Some(p) = &c.phases else { continue };
            let y = top + 44.0 + 20.0 * i as f64;
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="end">{} N={}</text>"#,
                x0 - 6.0,
                y + 12.0,
                esc(c.config.name()),
                c.containers
            );
            let rest = p.total.as_ref().map(|t| (t.p50_ms - p.sum.p50_ms).max(0.0));
            let parts = [
                Some(p.userns.p50_ms),
                Some(p.rootfs.p50_ms),
                p.cgroup.as_ref().map(|c| c.p50_ms),
                Some(p.init.p50_ms),
                rest,
            ];
            let mut v0 = 0.0;
            for (k, part) in parts.iter().enumerate() {
                let Some(v) = part else { continue };
                let _ = writeln!(
                    s,
                    r#"<rect x="{:.1}" y="{y}" width="{:.1}" height="14" fill="{}"><title>{} N={}: {} p50 {v:.1} ms</title></rect>"#,
                    xs(v0),
                    (xs(v0 + v) - xs(v0)).max(0.0),
                    PHASES[k].1,
                    esc(c.config.name()),
                    c.containers,
                    PHASES[k].0
                );
                v0 += v;
            }
            let (create, logged) = p.create();
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}">{:.1} ms{}</text>"#,
                xs(v0) + 4.0,
                y + 12.0,
                create.p50_ms,
                if logged { " total" } else { " (sum)" }
            );
        }
        for (k, (name, col)) in PHASES.iter().enumerate() {
            let x = 20.0 + 200.0 * k as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{x}" y="{}" width="14" height="10" fill="{col}"/><text x="{}" y="{}">{}</text>"#,
                y_axis + 22.0,
                x + 18.0,
                y_axis + 31.0,
                esc(name)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(g: &'a [Goal], issue: u32, starts: &str) -> Vec<&'a Goal> {
        g.iter()
            .filter(|x| x.issue == issue && x.goal.starts_with(starts))
            .collect()
    }

    #[test]
    fn issue_16_goals() {
        use crate::storm::{test_cell, Phases};
        let fast = Phases {
            userns: 1.0,
            rootfs: 2.0,
            cgroup: Some(0.5),
            init: 4.0,
            total: Some(8.0),
        };
        let slow = Phases {
            total: None,
            init: 20.0,
            ..fast
        };
        let cells = vec![
            test_cell("fd", 60, 1, &[50; 10], Some(fast)),
            test_cell("fd@2.x", 60, 1, &[50; 10], Some(slow)),
            test_cell("fd@2.x", 50, 100, &[1000; 100], Some(fast)),
            test_cell("runc@2.x", 50, 100, &[1500; 100], None),
            test_cell("runc-userns@2.x", 50, 100, &[2500; 100], None),
        ];
        let g = goals(&cells, &[]);
        let create = find(&g, 16, "N=1, L=60: shim create");
        assert_eq!(create.len(), 2, "{g:#?}");
        assert_eq!(create[0].reached, Some(true), "{:?}", create[0]);
        assert!(create[0].value.contains("p50 8.0 ms"), "{:?}", create[0]);
        // No logged total: not reached, and said so.
        assert_eq!(create[1].reached, Some(false), "{:?}", create[1]);
        assert!(create[1].value.contains("logs no total"), "{:?}", create[1]);
        let userns = find(
            &g,
            16,
            "containerd 2.x storm: p99 launch latency (task) idshift fd / runc shim + runc with",
        );
        assert_eq!(userns.len(), 1);
        assert_eq!(userns[0].reached, Some(true), "{:?}", userns[0]);
        assert!(userns[0].value.contains("= 0.40"), "{:?}", userns[0]);
        assert_eq!(userns[0].measured_at, "L=50, N=100");
        let plain = find(
            &g,
            16,
            "containerd 2.x storm: p99 launch latency (task) idshift fd / runc shim + runc (no",
        );
        assert_eq!(plain[0].reached, Some(false), "{:?}", plain[0]);
        // A miss carries the breakdown.
        assert!(
            plain[0].value.contains("= 0.67")
                && plain[0]
                    .value
                    .contains("e2e p99 fd@2.x 1000 ms / runc@2.x 1500 ms")
                && plain[0].value.contains("shim create p50 8.0"),
            "{:?}",
            plain[0]
        );
        // Without --run-rm samples, the ctr run --rm goal is not measured.
        let rm = find(&g, 16, "N=1, L=60: `ctr run --rm`");
        assert_eq!(rm[0].reached, None, "{:?}", rm[0]);
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(17.0), 20.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
        assert_eq!(nice_ceiling(101.0), 200.0);
    }
}
