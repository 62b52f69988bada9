//! Writing the results of one run: one markdown section per benchmark of the run, assembled into
//! `BENCHMARKS.md`, and the SVG plot. Nothing is kept from earlier runs.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result};

use super::{Config, Goal, Section, NAMES};

/// What the numbers were measured on.
#[derive(Debug, Clone)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub kernel: String,
    pub date: String,
    pub load: String,
    pub tools: String,
}

fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let s = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&s)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// `/proc/loadavg`: the 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

impl Machine {
    pub fn probe() -> Machine {
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let load = load_average();
        let tools = [
            first_line("iperf3", &["--version"]),
            first_line("iptables-legacy", &["-V"]),
            first_line("iptables-nft", &["-V"]),
            first_line("nft", &["--version"]),
        ]
        .join("; ");
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            cpu,
            kernel,
            date: first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            load,
            tools,
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Where a run writes: the workspace root (`BENCHMARKS.md`, `bench/scale.svg`) for a full run of
/// every benchmark, else `target/bench/quick/` or `target/bench/partial/` (never a tracked file).
pub fn out_dir(root: &Path, quick: bool, all: bool) -> PathBuf {
    match (quick, all) {
        (false, true) => root.to_path_buf(),
        (true, _) => root.join("target").join("bench").join("quick"),
        (false, false) => root.join("target").join("bench").join("partial"),
    }
}

/// The commit the measured code comes from (`git describe --always --dirty`).
fn commit() -> String {
    let c = first_line("git", &["describe", "--always", "--dirty", "--abbrev=12"]);
    if c.is_empty() {
        "unknown".into()
    } else {
        c
    }
}

/// One benchmark's section of this run, with its header line and goal table.
/// One benchmark's section; `(date, command)` name the run it was measured in.
fn section_markdown(
    s: &Section,
    took: Duration,
    load_after: &str,
    (date, command): (&str, &str),
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## {}\n", s.title);
    let _ = writeln!(
        md,
        "Measured {date} by `{command}` (this run), {:.0} s for this benchmark; load average (1, 5, 15 min) \
         after it: {load_after} (counts the benchmark's own processes too).\n",
        took.as_secs_f64(),
    );
    if !s.goals.is_empty() {
        let _ = writeln!(md, "| goal | measured | verdict |\n|---|---|---|");
        for g in &s.goals {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                esc(&g.name),
                esc(&g.measured),
                verdict(g)
            );
        }
        md.push('\n');
    }
    md.push_str(&s.markdown);
    md
}

fn verdict(g: &Goal) -> String {
    format!(
        "{}{}",
        if g.met { "**met**" } else { "**not met**" },
        if g.limit.is_empty() {
            String::new()
        } else {
            format!(": {}", esc(&g.limit))
        }
    )
}

/// Write the report of this run (and its plot): every figure in it comes from this run.
pub fn write(
    cfg: &Config,
    machine: &Machine,
    sections: &[(Section, Duration, String)],
    total: Duration,
) -> Result<()> {
    fs::create_dir_all(&cfg.out).with_context(|| format!("create {}", cfg.out.display()))?;
    let mut data: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for (s, ..) in sections {
        for (series, x, y) in &s.data {
            data.entry(series.clone())
                .or_default()
                .push((*x, y.median, y.min, y.max));
        }
    }
    // The workspace root (a full run) keeps the plot under bench/.
    let svg_link = if cfg.out.join("Cargo.toml").exists() {
        "bench/scale.svg"
    } else {
        "scale.svg"
    };
    let svg_path = cfg.out.join(svg_link);
    if !data.is_empty() {
        if let Some(dir) = svg_path.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(&svg_path, plot(&data))?;
    }
    let report = assemble(
        cfg,
        machine,
        sections,
        total,
        (!data.is_empty()).then_some(svg_link),
    );
    let out = cfg.out.join("BENCHMARKS.md");
    fs::write(&out, report).with_context(|| format!("write {}", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn assemble(
    cfg: &Config,
    machine: &Machine,
    sections: &[(Section, Duration, String)],
    total: Duration,
    svg_link: Option<&str>,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    if cfg.quick {
        let _ = writeln!(
            md,
            "**Quick mode** (`--quick`): a smoke test that every benchmark and this generator work (CI), each \
             benchmark at its smallest size, from the dev build; its figures are not results (and its goal rows \
             judge them anyway, so the code that computes them runs). Written under `target/`. The reference \
             figures are in the repository's top-level `BENCHMARKS.md` (full mode).\n"
        );
    }
    let _ = writeln!(
        md,
        "Generated by `{}` on {} in **one run** of commit `{}` ({:.0} s; the build comes on top): every \
         figure below comes from that run; do not edit by hand. The generator is the `bench` binary of \
         `enforcer-tests` (`tests/src/bin/bench.rs`, `tests/src/bench/`). Only a full run of every benchmark \
         (`cargo xtask bench`) writes this file; `--quick` and runs of some benchmarks write under `target/bench/`.\n",
        cfg.command,
        machine.date,
        commit(),
        total.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "Every figure is a ratio to a baseline measured in the same run (empty program of the same hook, no filter, \
         smallest policy, ...), repeated, and reported as the median with its spread (min–max unless marked IQR). \
         Absolute numbers are given for reference only: this is a small shared VM, and only the ratios carry over.\n"
    );
    let _ = writeln!(md, "## Machine\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| CPU | {} |", machine.cpu);
    let _ = writeln!(md, "| CPUs (nproc) | {} |", machine.nproc);
    let _ = writeln!(md, "| kernel (`uname -r`) | {} |", machine.kernel);
    let _ = writeln!(md, "| tools | {} |", machine.tools);
    let _ = writeln!(md, "| measured | {} |", machine.date);
    let _ = writeln!(
        md,
        "| load average (1, 5, 15 min) before the run | {} |",
        machine.load
    );
    md.push('\n');
    let _ = writeln!(md, "## Goals\n");
    let _ = writeln!(
        md,
        "| benchmark | goal | measured | verdict |\n|---|---|---|---|"
    );
    for (s, ..) in sections {
        for g in &s.goals {
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} |",
                s.name,
                esc(&g.name),
                esc(&g.measured),
                verdict(g)
            );
        }
    }
    md.push('\n');
    if let Some(svg_link) = svg_link {
        let _ = writeln!(
            md,
            "![cost against rule count: enforcer, iptables, nftables]({svg_link})\n\n\
             [`{svg_link}`]({svg_link}): per-packet cost relative to no filter (no-filter throughput ÷ filtered \
             throughput, log scale; 1 = free) against the number of rules, for UDP 64-byte packets and TCP \
             (`throughput`, median and min–max), and the enforcer's cost of judging a denied SYN (two `POLICY` trie \
             lookups) from `scale` (÷ empty tc program; this panel goes on to the largest size that fits).\n"
        );
    }
    for name in NAMES {
        match sections.iter().find(|(s, ..)| s.name == name) {
            Some((s, took, load_after)) => {
                md.push_str(&section_markdown(
                    s,
                    *took,
                    load_after,
                    (&machine.date, &cfg.command),
                ));
                md.push('\n');
            }
            None => {
                let _ = writeln!(md, "## `{name}`\n\nNot measured in this run.\n");
            }
        }
    }
    md.push_str(GENERATED_POLICIES);
    md.push_str(&by_hand());
    md
}

/// The one figure that is not measured by every run: a CPU profile, taken by hand.
fn by_hand() -> String {
    format!(
        "\n## Measured by hand on {PROFILE_DATE} (not by this run)\n\n\
         A CPU profile cannot be taken by every run. Command: `{}`. Result then: {PROFILE_RESULT}\n",
        super::dpbench::PERF_COMMAND
    )
}

/// When [`PROFILE_RESULT`] was measured.
const PROFILE_DATE: &str = "2026-11-23";
/// A `perf` profile of `from_pod` on an established flow, as read by hand on [`PROFILE_DATE`].
const PROFILE_RESULT: &str = "the program's own JITed code took the most samples (~20 %), the kernel's hash-map \
     lookups for `ENDPOINTS` and `CONNTRACK` (`htab_map_hash`, `lookup_nulls_elem_raw`, `__htab_map_lookup_elem`) \
     ~13 %, an out-of-line `memset` BPF subprogram the program calls ~2 %, and the test loop itself ~14 %.";

const GENERATED_POLICIES: &str = "## Generated policies

Every benchmark that needs a policy of N rules generates it (`tests/src/bench/policygen.rs`) as YAML in the policy \
language and parses it like any policy file: S services (`svc-0` … `svc-{S-1}`, one workload and one identity each, \
S = N up to 10 000, then several rules per service), where `svc-0` (web, the client) may reach `svc-1` (api, the server) on TCP 8080, TCP 5201 and \
UDP 5201 through one egress rule of web and one ingress rule of api, and `svc-2` (other) is a service web has no \
rule for. The other N − 2 rules are spread over the services: rule g belongs to service s = 2 + g mod (S − 2), is an \
ingress rule when s is even and an egress rule when odd, and allows one peer service on one TCP port. Every rule \
yields its own (subject, peer) decision table, so the `POLICY` trie grows linearly with N (about 2 entries per \
rule). The flows measured are always judged against the whole set: web → api (allowed), web → other (denied by \
default deny: both lookups of the trie are made).

The iptables and nftables equivalents (`throughput`) allow the same N 5-tuples: iptables as a linear chain in \
`FORWARD` with the flow under test last (kube-proxy style; stateless, so every packet walks the chain, and two \
reply rules for the test flow follow), nftables as one rule looking up one set of N `saddr . daddr . l4proto . \
dport` elements (and one rule looking up the reversed tuple for replies).
";

/// Hand-written SVG: per-packet cost relative to no filter against rules, log-log, one panel
/// per traffic kind, plus the `BPF_PROG_TEST_RUN` judgment cost of the enforcer.
#[expect(clippy::too_many_lines, reason = "one drawing, read top to bottom")]
pub fn plot(data: &BTreeMap<String, Vec<Point>>) -> String {
    let panels: [(&str, &str, bool); 3] = [
        ("udp", "UDP 64-byte packets/s: cost vs no filter", true),
        ("tcp", "TCP throughput: cost vs no filter", true),
        (
            "testrun",
            "enforcer, denied SYN (TestRun): ÷ empty tc",
            false,
        ),
    ];
    let (pw, ph) = (380.0_f64, 300.0_f64);
    let (ml, mr, mt, mb) = (56.0, 14.0, 34.0, 44.0);
    let width = pw * 3.0;
    let height = ph + 40.0;
    let colors = [
        ("enforcer", "#1b7837"),
        ("iptables-legacy", "#b2182b"),
        ("iptables-nft", "#ef8a62"),
        ("nftables", "#2166ac"),
        ("from_pod", "#1b7837"),
        ("to_pod", "#5aae61"),
    ];
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>"#
    );
    for (i, (prefix, title, invert)) in panels.iter().enumerate() {
        let x0 = pw * i as f64;
        let series: Vec<(&String, &Vec<Point>)> = data
            .iter()
            .filter(|(k, _)| k.split_whitespace().next() == Some(prefix))
            .collect();
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="18" text-anchor="middle" font-weight="bold">{title}</text>"#,
            x0 + pw / 2.0
        );
        if series.is_empty() {
            let _ = writeln!(
                svg,
                r##"<text x="{}" y="{}" text-anchor="middle" fill="#888">not measured yet</text>"##,
                x0 + pw / 2.0,
                ph / 2.0
            );
            continue;
        }
        let pts: Vec<(f64, f64)> = series
            .iter()
            .flat_map(|(_, v)| v.iter())
            .flat_map(|p| {
                let (x, y, lo, hi) = shown(p, *invert);
                [(x, y), (x, lo), (x, hi)]
            })
            .filter(|(_, y)| y.is_finite() && *y > 0.0)
            .collect();
        let xmin = pts
            .iter()
            .map(|p| p.0)
            .fold(f64::MAX, f64::min)
            .log10()
            .floor();
        let xmax = pts
            .iter()
            .map(|p| p.0)
            .fold(0.0, f64::max)
            .log10()
            .ceil()
            .max(xmin + 1.0);
        let ymin = pts
            .iter()
            .map(|p| p.1)
            .fold(f64::MAX, f64::min)
            .min(1.0)
            .log10()
            .floor();
        let ymax = (pts.iter().map(|p| p.1).fold(0.0, f64::max) * 1.2)
            .log10()
            .ceil()
            .max(ymin + 1.0);
        let (left, right, top, bottom) = (x0 + ml, x0 + pw - mr, mt, ph - mb + 20.0);
        let sx = |x: f64| left + (x.log10() - xmin) / (xmax - xmin) * (right - left);
        let sy = |y: f64| bottom - (y.log10() - ymin) / (ymax - ymin) * (bottom - top);
        let _ = writeln!(
            svg,
            r##"<rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
            right - left,
            bottom - top
        );
        // Grid and ticks: decades, plus 2 and 5 on the y axis.
        let mut e = xmin;
        while e <= xmax + 1e-9 {
            let x = sx(10f64.powf(e));
            let _ = writeln!(
                svg,
                r##"<line x1="{x}" y1="{top}" x2="{x}" y2="{bottom}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{}</text>"##,
                bottom + 14.0,
                fmt_count(10f64.powf(e))
            );
            e += 1.0;
        }
        let mut e = ymin;
        while e <= ymax + 1e-9 {
            for (m, major) in [(1.0, true), (2.0, false), (5.0, false)] {
                let v = m * 10f64.powf(e);
                if v.log10() > ymax + 1e-9 {
                    continue;
                }
                let y = sy(v);
                let _ = writeln!(
                    svg,
                    r#"<line x1="{left}" y1="{y}" x2="{right}" y2="{y}" stroke="{}"/><text x="{}" y="{}" text-anchor="end">{}</text>"#,
                    if major { "#ccc" } else { "#eee" },
                    left - 4.0,
                    y + 4.0,
                    fmt_value(v)
                );
            }
            e += 1.0;
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">rules</text>"#,
            f64::midpoint(left, right),
            bottom + 30.0
        );
        for (j, (name, values)) in series.iter().enumerate() {
            let label = name.split_once(' ').map_or(name.as_str(), |(_, l)| l);
            let color = colors
                .iter()
                .find(|(k, _)| *k == label)
                .map_or("#666", |(_, c)| c);
            let mut v: Vec<(f64, f64, f64, f64)> = values
                .iter()
                .map(|p| shown(p, *invert))
                .filter(|(_, y, lo, hi)| [y, lo, hi].iter().all(|v| v.is_finite() && **v > 0.0))
                .collect();
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            let path: Vec<String> = v
                .iter()
                .map(|(x, y, _, _)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                path.join(" ")
            );
            for (x, y, lo, hi) in &v {
                let _ = writeln!(
                    svg,
                    r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="1" opacity="0.6"/>"#,
                    sx(*x),
                    sy(*lo),
                    sx(*x),
                    sy(*hi)
                );
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"><title>{label}: {} rules → {:.2} ({:.2}–{:.2})</title></circle>"#,
                    sx(*x),
                    sy(*y),
                    x,
                    y,
                    lo,
                    hi
                );
            }
            let ly = top + 14.0 + 14.0 * j as f64;
            let _ = writeln!(
                svg,
                r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{label}</text>"#,
                left + 8.0,
                left + 26.0,
                left + 30.0,
                ly + 4.0
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// A plot point: rules, median, min, max.
type Point = (usize, f64, f64, f64);

/// The point as drawn: throughput ratios become costs (1 / ratio, so min and max swap).
fn shown(p: &Point, invert: bool) -> (f64, f64, f64, f64) {
    let (x, y, lo, hi) = *p;
    if invert {
        (x as f64, 1.0 / y, 1.0 / hi, 1.0 / lo)
    } else {
        (x as f64, y, lo, hi)
    }
}

fn fmt_count(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{}M", v / 1_000_000.0)
    } else if v >= 1_000.0 {
        format!("{}k", v / 1_000.0)
    } else {
        format!("{v}")
    }
}

fn fmt_value(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}×")
    } else {
        format!("{v}×")
    }
}
