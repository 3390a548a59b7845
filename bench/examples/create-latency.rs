//! The shim's create path and memory, one container at a time (issue 16):
//! a private containerd (the system's), an image of `--layers` layers, and
//! `--runs` sequential `ctr run --rm` of it under idshift (after one
//! untimed run: the first Create after a boot probes the kernel). Prints, from the
//! shim's own per-create log line, the median and p99 of each phase and of
//! the `total`, the `ctr run --rm` wall time, the phases the init reports at
//! debug level (the last run's), then the PSS of one running, ungrouped shim
//! (smaps_rollup, and its largest mappings from smaps) and the shim binary's
//! size.
//!
//! `cargo run --release -p idshift-bench --example create-latency -- --runs 30 --layers 60`
//! (the shim used is the one built beside this example's profile dir).

use idshift_harness::{shim_dir, unique, Containerd};
use std::collections::BTreeMap;
use std::time::Instant;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (s.len() as f64 - 1.0)).round() as usize;
    s[i.min(s.len() - 1)]
}

/// `name <f> ms` pairs of a `created ...` log line (the parenthesis with the
/// mount counts skipped).
fn phases(line: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut flat = String::new();
    for ch in line.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => flat.push(ch),
            _ => {}
        }
    }
    for part in flat.split(", ") {
        let words: Vec<&str> = part.split_whitespace().collect();
        if words.len() >= 3 && words[words.len() - 1].starts_with("ms") {
            if let Ok(v) = words[words.len() - 2].parse::<f64>() {
                let name = words[..words.len() - 2].join(" ");
                let name = name.rsplit(": ").next().unwrap_or(&name).to_string();
                out.push((name, v));
            }
        }
    }
    out
}

fn main() -> Result<(), Error> {
    let mut runs = 30usize;
    let mut layers = 60usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--runs" => runs = value()?.parse()?,
            "--layers" => layers = value()?.parse()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let shim = shim_dir().join(idshift_harness::SHIM_BINARY);
    println!("shim: {}", shim.display());
    let d = Containerd::start("log_level = \"debug\"\n")?;
    let ns = d.namespace();
    let image = format!("docker.io/library/idshift-perf-{layers}:latest");
    d.import_image(&ns, &image, layers)?;
    let mut wall = Vec::new();
    // One untimed run first: the first Create after a boot probes the
    // kernel (cached per boot) and finds every cache cold. Its log line
    // (`created warmup-...`) is not counted.
    for i in 0..=runs {
        let id = match i {
            0 => unique("warmup"),
            _ => unique(&format!("perf-{i}")),
        };
        let t = Instant::now();
        let out = d.ctr(
            &ns,
            &[
                "run",
                "--rm",
                "--runtime",
                "io.containerd.idshift.v2",
                &image,
                &id,
                "/bin/true",
            ],
        );
        if i > 0 {
            wall.push(t.elapsed().as_secs_f64() * 1e3);
        }
        if !out.success() {
            return Err(format!("ctr run {id}: {out:?}").into());
        }
    }
    let log = d.log();
    let mut by_phase: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut order = Vec::new();
    let mut init_steps: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut init_order: Vec<String> = Vec::new();
    for line in log.lines() {
        if let Some(at) = line.find("msg=\"created perf-") {
            for (name, v) in phases(&line[at..]) {
                if !order.contains(&name) {
                    order.push(name.clone());
                }
                by_phase.entry(name).or_default().push(v);
            }
        }
        if let Some(at) = line.find("init phases of container perf-") {
            let text = line[at..].trim_end_matches('"');
            let steps = text.split_once(": ").map(|x| x.1).unwrap_or("");
            let steps = steps.split("; ").next().unwrap_or("");
            for step in steps.split(", ") {
                if let Some((name, v)) = step.trim_end_matches(" ms").rsplit_once(' ') {
                    if let Ok(v) = v.parse::<f64>() {
                        if !init_order.contains(&name.to_string()) {
                            init_order.push(name.to_string());
                        }
                        init_steps.entry(name.to_string()).or_default().push(v);
                    }
                }
            }
        }
    }
    println!("{runs} x ctr run --rm, {layers} layers (median / p99, ms):");
    for name in &order {
        let v = &by_phase[name];
        println!(
            "  {name:<22} {:>7.1} / {:>7.1}   (n={})",
            percentile(v, 50.0),
            percentile(v, 99.0),
            v.len()
        );
    }
    println!(
        "  {:<22} {:>7.1} / {:>7.1}",
        "ctr run --rm wall",
        percentile(&wall, 50.0),
        percentile(&wall, 99.0)
    );
    if !init_steps.is_empty() {
        println!("the first process's set-up, step by step (shim debug log; median / p99, ms):");
        for name in &init_order {
            let v = &init_steps[name];
            println!(
                "  {name:<48} {:>6.2} / {:>6.2}",
                percentile(v, 50.0),
                percentile(v, 99.0)
            );
        }
    }

    // One running, ungrouped shim: its PSS.
    let id = unique("perf-pss");
    let out = d.ctr(
        &ns,
        &[
            "run",
            "-d",
            "--runtime",
            "io.containerd.idshift.v2",
            &image,
            &id,
            "/bin/sleep",
            "600",
        ],
    );
    if !out.success() {
        return Err(format!("ctr run -d {id}: {out:?}").into());
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    let shim_pid = std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("containerd-shim-idshift-v2") && c.contains(&ns) && c.contains(&id)
                })
                .unwrap_or(false)
        })
        .ok_or("the running container's shim was not found")?;
    let rollup = std::fs::read_to_string(format!("/proc/{shim_pid}/smaps_rollup"))?;
    for l in rollup.lines().filter(|l| {
        ["Rss:", "Pss:", "Pss_Anon:", "Pss_File:", "Private_Dirty:"]
            .iter()
            .any(|k| l.starts_with(k))
    }) {
        println!("shim {shim_pid} {l}");
    }
    let status = std::fs::read_to_string(format!("/proc/{shim_pid}/status"))?;
    for l in status.lines().filter(|l| l.starts_with("Threads:")) {
        println!("shim {shim_pid} {l}");
    }
    // smaps, by mapping: the largest PSS first.
    let smaps = std::fs::read_to_string(format!("/proc/{shim_pid}/smaps"))?;
    let mut maps: Vec<(u64, String)> = Vec::new();
    let mut current = String::new();
    for l in smaps.lines() {
        let first = l.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let f: Vec<&str> = l.split_whitespace().collect();
            current = format!(
                "{} {} {}",
                f.get(1).unwrap_or(&""),
                f.get(5).unwrap_or(&"[anon]"),
                f.first().unwrap_or(&"")
            );
        } else if let Some(v) = l.strip_prefix("Pss:") {
            let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            maps.push((kb, current.clone()));
        }
    }
    maps.sort_by_key(|m| std::cmp::Reverse(m.0));
    for (kb, m) in maps.iter().take(14) {
        println!("  pss {kb:>5} kB  {m}");
    }
    let size = std::fs::metadata(&shim)?.len();
    println!("shim binary: {} bytes", size);
    d.kill_and_remove(&ns, &[&id])?;
    d.assert_no_leaks(std::time::Duration::from_secs(10));
    Ok(())
}
