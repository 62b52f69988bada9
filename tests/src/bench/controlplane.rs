//! `controlplane`: time to compile and install policies of growing size, time for a one-rule
//! change to reach the datapath, and memory. Each size runs in a child process (`bench
//! --rss-child RULES IDENTITIES COMPILES INSTALLS CHANGES`), so that its resident memory is its
//! own; the child prints `key value...` lines.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{anyhow, bail, Context, Result};
use enforcer::policy::{compile, parse::parse_documents, Document};
use enforcer_common::programs;
use enforcer_tests::frames::Frame;

use super::{
    dpbench::{scale_identities, ASKED_RULES},
    policygen::{api_policy_yaml, generate, test_context, Endpoints},
    stats::{ratio_of, summarize, Summary},
    testrun::{Bench, TC_PASS, TC_SHOT},
    Config, Goal, Section,
};

/// Identities of the cluster size (issue 15: 150 000 pods, one identity each here).
const CLUSTER_IDENTITIES: usize = 150_000;

/// The port the one-rule change opens (web → api).
const CHANGE_PORT: u16 = 9_999;

fn status_kb(key: &str) -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Per map this process holds: (name, `max_entries`, kernel memory charged to it, the
/// `memlock` of its fdinfo).
fn bpf_maps() -> Vec<(String, u32, u64)> {
    let Ok(dir) = fs::read_dir("/proc/self/fdinfo") else {
        return Vec::new();
    };
    let field = |info: &str, key: &str| -> Option<u64> {
        info.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Ok(info) = fs::read_to_string(e.path()) else {
            continue;
        };
        let (Some(id), Some(memlock)) = (field(&info, "map_id:"), field(&info, "memlock:")) else {
            continue;
        };
        let Ok(map) = u32::try_from(id).map(aya::maps::MapInfo::from_id) else {
            continue;
        };
        if let Ok(map) = map {
            let name = map.name_as_str().unwrap_or("?").to_string();
            out.push((name, map.max_entries(), memlock));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Kernel memory charged to the BPF maps this process holds (`memlock` of their fdinfo).
fn bpf_map_memlock() -> u64 {
    let Ok(dir) = fs::read_dir("/proc/self/fdinfo") else {
        return 0;
    };
    let mut total = 0;
    for e in dir.flatten() {
        if let Ok(info) = fs::read_to_string(e.path()) {
            if info.contains("map_type:") {
                total += info
                    .lines()
                    .find(|l| l.starts_with("memlock:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    total
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// A real `enforcer agent` given the generated policy of one size as one file (what `policy apply
/// -f` sends): how long its `apply` takes (parse, compile, install, persist; the request returns
/// once the generation is flipped) and its resident memory after it.
pub struct AgentSize {
    pub yaml_mib: f64,
    pub apply_ms: f64,
    pub rss_mib: f64,
    pub hwm_mib: f64,
    pub generation: u64,
}

/// `key:` of `/proc/PID/status`, in KiB.
fn proc_status_kb(pid: u32, key: &str) -> Result<f64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no {key} in /proc/{pid}/status"))
}

pub fn agent_size(rules: usize, identities: usize) -> Result<AgentSize> {
    let ep = Endpoints::default();
    let g = generate(rules, identities, &ep)?;
    let topo = enforcer_tests::Topology::builder().node("n1").build()?;
    let work = enforcer_tests::cluster::WorkDir::new(topo.prefix())?;
    let agent = enforcer_tests::cluster::AgentProcess::start(&topo, "n1", &work.0, &[])?;
    let t = Instant::now();
    let applied = agent.apply("cluster.yaml", &g.yaml)?;
    let apply_ms = ms(t);
    let pid = agent
        .pid()
        .ok_or_else(|| anyhow!("the agent is not running"))?;
    #[expect(clippy::cast_precision_loss, reason = "tens of MiB")]
    let yaml_mib = g.yaml.len() as f64 / 1_048_576.0;
    Ok(AgentSize {
        yaml_mib,
        apply_ms,
        rss_mib: proc_status_kb(pid, "VmRSS:")? / 1024.0,
        hwm_mib: proc_status_kb(pid, "VmHWM:")? / 1024.0,
        generation: applied.generation,
    })
}

/// `bench --agent-size RULES IDENTITIES`: [`agent_size`] by hand.
pub fn agent_size_command(args: &[String]) -> Result<()> {
    let num = |i: usize| -> Result<usize> {
        args.get(i)
            .ok_or_else(|| anyhow!("--agent-size RULES IDENTITIES"))?
            .parse::<usize>()
            .context("--agent-size: a number")
    };
    let a = agent_size(num(0)?, num(1)?)?;
    println!(
        "yaml {:.1} MiB, apply {:.0} ms (generation {}), RSS {:.1} MiB, peak {:.1} MiB",
        a.yaml_mib, a.apply_ms, a.generation, a.rss_mib, a.hwm_mib
    );
    Ok(())
}

/// The child: measure one size and print the results.
#[expect(clippy::too_many_lines, reason = "one measurement, read top to bottom")]
pub fn rss_child(args: &[String]) -> Result<()> {
    let num = |i: usize| -> Result<usize> {
        args.get(i)
            .ok_or_else(|| anyhow!("--rss-child RULES IDENTITIES COMPILES INSTALLS CHANGES"))?
            .parse::<usize>()
            .context("--rss-child: a number")
    };
    let (rules, identities) = (num(0)?, num(1)?);
    let (compile_runs, install_runs, change_runs) = (num(2)?, num(3)?, num(4)?);
    let ep = Endpoints::default();
    let ctx = test_context(&ep);
    if rules == 0 {
        // Baseline: the datapath loaded, no policy.
        let b = Bench::new(&enforcer::policy::Compiled::default(), &ep)?;
        println!("rss_kb {}", status_kb("VmRSS:"));
        println!("hwm_kb {}", status_kb("VmHWM:"));
        println!("memlock_b {}", bpf_map_memlock());
        for (name, entries, memlock) in bpf_maps() {
            println!("map_{name} {entries} {memlock}");
        }
        drop(b);
        return Ok(());
    }
    let g = generate(rules, identities, &ep)?;
    println!("parse_ms {}", g.parse_time.as_secs_f64() * 1e3);
    println!("yaml_bytes {}", g.yaml_bytes);
    let t = Instant::now();
    let compiled = compile(&g.set, &ctx);
    println!("compile_ms {}", ms(t));
    println!("entries {}", compiled.policy.len());
    println!("identities {}", compiled.identities.len());
    for _ in 1..compile_runs {
        let t = Instant::now();
        let again = compile(&g.set, &ctx);
        println!("compile_ms {}", ms(t));
        drop(again);
    }
    let empty = enforcer::policy::Compiled::default();
    let mut b = Bench::new(&empty, &ep)?;
    let endpoints: std::collections::BTreeSet<(u32, std::net::IpAddr)> = ep
        .web
        .iter()
        .chain(&ep.api)
        .chain(&ep.other)
        .map(|a| (super::testrun::TEST_IFINDEX, *a))
        .collect();
    // Each timed install writes the whole policy into a slot that holds the empty one (both
    // slots are emptied first): the cost of installing a policy from scratch.
    for _ in 0..install_runs {
        b.dp.install(&empty, &endpoints)?;
        b.dp.install(&empty, &endpoints)?;
        let t = Instant::now();
        b.dp.install(&compiled, &endpoints)?;
        println!(
            "install_ms {} {}",
            ms(t),
            b.dp.last_install_writes().total()
        );
    }
    // Both slots hold the policy from here on.
    b.dp.install(&compiled, &endpoints)?;
    println!("rss_kb {}", status_kb("VmRSS:"));
    println!("hwm_kb {}", status_kb("VmHWM:"));
    println!("memlock_b {}", bpf_map_memlock());
    // One-rule change: api's ingress rule from web gains (or loses) TCP 9999.
    let mut set = g.set.clone();
    let mut sport = 50_000u16;
    let mut probe = |b: &Bench| -> Result<u32> {
        sport = sport.wrapping_add(1).max(50_000);
        let f = Frame::tcp_syn(ep.web[0], ep.api[0], sport, CHANGE_PORT).build();
        Ok(b.run(programs::TO_POD, &f, 1)?.0)
    };
    if probe(&b)? != TC_SHOT {
        bail!("web → api:{CHANGE_PORT} should be denied before the change");
    }
    for i in 0..change_runs {
        let open = i % 2 == 0;
        let (want, before) = if open {
            (TC_PASS, TC_SHOT)
        } else {
            (TC_SHOT, TC_PASS)
        };
        let t0 = Instant::now();
        let doc = api_policy_yaml(if open { Some(CHANGE_PORT) } else { None });
        let docs = parse_documents("change.yaml", &doc).map_err(|e| anyhow!("{e}"))?;
        for d in docs {
            if let Document::FlowPolicy(p) = d {
                set.policies.insert(p.key(), p);
            }
        }
        let parse = ms(t0);
        let t = Instant::now();
        let compiled = compile(&set, &ctx);
        let compile_ms = ms(t);
        let t = Instant::now();
        b.dp.install(&compiled, &endpoints)?;
        let install = ms(t);
        let writes = b.dp.last_install_writes().total();
        let t = Instant::now();
        let mut probes = 0;
        loop {
            probes += 1;
            let v = probe(&b)?;
            if v == want {
                break;
            }
            if v != before || probes > 1_000_000 {
                bail!("verdict {v} after the change");
            }
        }
        let probe_ms = ms(t);
        println!(
            "change_ms {} {parse} {compile_ms} {install} {probe_ms} {probes} {writes}",
            ms(t0)
        );
    }
    Ok(())
}

/// Parsed child output.
#[derive(Default)]
struct ChildResult {
    values: BTreeMap<String, Vec<Vec<f64>>>,
}

impl ChildResult {
    fn all(&self, key: &str, col: usize) -> Vec<f64> {
        self.values
            .get(key)
            .map(|rows| rows.iter().filter_map(|r| r.get(col).copied()).collect())
            .unwrap_or_default()
    }
    fn one(&self, key: &str) -> f64 {
        self.all(key, 0).first().copied().unwrap_or(f64::NAN)
    }
}

fn run_child(rules: usize, identities: usize, trials: [usize; 3]) -> Result<ChildResult> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args([
            "--rss-child".to_string(),
            rules.to_string(),
            identities.to_string(),
            trials[0].to_string(),
            trials[1].to_string(),
            trials[2].to_string(),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("run the controlplane child")?;
    if !out.status.success() {
        bail!(
            "controlplane child for {rules} rules failed ({})",
            out.status
        );
    }
    let mut r = ChildResult::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut f = line.split_whitespace();
        if let Some(k) = f.next() {
            let v: Vec<f64> = f.filter_map(|x| x.parse().ok()).collect();
            r.values.entry(k.to_string()).or_default().push(v);
        }
    }
    Ok(r)
}

#[expect(clippy::too_many_lines, reason = "one report, read top to bottom")]
pub fn run(cfg: &Config) -> Result<Section> {
    eprintln!("controlplane: sizes {:?}", cfg.sizes);
    let base = run_child(0, 0, [1, 1, 1])?;
    // The cluster size of issue 15: 100 000 rules over 150 000 identities (full runs only).
    let cluster = if cfg.quick {
        None
    } else {
        eprintln!("  {ASKED_RULES} rules / {CLUSTER_IDENTITIES} identities");
        let t = Instant::now();
        let r = match run_child(ASKED_RULES, CLUSTER_IDENTITIES, [1, 3, 2]) {
            Ok(r) => r,
            Err(e) => {
                // Reported in the section instead of failing the whole benchmark.
                eprintln!("  cluster size failed: {e:#}");
                let mut failed = ChildResult::default();
                failed.values.insert("failed".into(), vec![vec![]]);
                failed
            }
        };
        eprintln!(
            "  cluster size: compile {:.0} ms, install {:.0} ms, RSS {:.0} MiB ({:.0} s)",
            summarize(&r.all("compile_ms", 0)).median,
            summarize(&r.all("install_ms", 0)).median,
            r.one("rss_kb") / 1024.0,
            t.elapsed().as_secs_f64()
        );
        Some(r)
    };
    let agent = if cfg.quick {
        None
    } else {
        let measured = agent_size(ASKED_RULES, CLUSTER_IDENTITIES);
        match &measured {
            Ok(a) => eprintln!(
                "  agent at cluster size: apply {:.0} ms, RSS {:.0} MiB (peak {:.0} MiB)",
                a.apply_ms, a.rss_mib, a.hwm_mib
            ),
            Err(e) => eprintln!("  agent at cluster size failed: {e:#}"),
        }
        Some(measured.map_err(|e| format!("{e:#}")))
    };
    let mut rows = Vec::new();
    for &n in &cfg.sizes {
        let trials = [3, 3, 3];
        let ids = scale_identities(n);
        let t = Instant::now();
        let r = run_child(n, ids, trials)?;
        eprintln!(
            "  {n} rules / {ids} identities: compile {:.0} ms, install {:.0} ms, change {:.0} ms, RSS {:.0} MiB ({:.0} s)",
            summarize(&r.all("compile_ms", 0)).median,
            summarize(&r.all("install_ms", 0)).median,
            summarize(&r.all("change_ms", 0)).median,
            r.one("rss_kb") / 1024.0,
            t.elapsed().as_secs_f64()
        );
        rows.push((n, ids, r));
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Each size runs in its own process (`bench --rss-child`): generate the policy (YAML, parsed as a policy file), \
         compile it (`policy::compile`, pure), load the datapath and install it (`Datapath::install`: write into the \
         inactive slot of `IDENTITIES`/`CIDR_IDENTITIES`/`POLICY` the entries that differ from what it holds, then flip \
         `CONFIG`). \"install\" writes the whole policy into a slot that holds the empty policy (both slots are emptied \
         before each trial): the cost of an install from scratch. Medians with min–max over 3 trials. The last column divides the time per rule by that at the second size (the smallest is all fixed \
         cost): 1 means linear.\n"
    );
    let _ = writeln!(
        md,
        "| rules / identities | `POLICY` entries | parse YAML (ms) | compile (ms) | install (ms) | compile + install per rule (µs) | per rule ÷ at {} rules |",
        rows.get(1).or(rows.first()).map_or(0, |r| r.0)
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    let total = |r: &ChildResult| -> Summary {
        let c = summarize(&r.all("compile_ms", 0));
        let i = summarize(&r.all("install_ms", 0));
        Summary {
            n: c.n.min(i.n),
            median: c.median + i.median,
            q1: c.q1 + i.q1,
            q3: c.q3 + i.q3,
            min: c.min + i.min,
            max: c.max + i.max,
        }
    };
    // Per rule, relative to the second size (the smallest is all fixed cost): 1 = linear.
    let per_rule = |n: usize, r: &ChildResult| -> Summary {
        let t = total(r);
        let k = 1e3 / n as f64;
        Summary {
            n: t.n,
            median: t.median * k,
            q1: t.q1 * k,
            q3: t.q3 * k,
            min: t.min * k,
            max: t.max * k,
        }
    };
    let per_rule_base = rows
        .get(1)
        .or(rows.first())
        .map(|(n, _, r)| per_rule(*n, r));
    for (n, ids, r) in &rows {
        let p = per_rule(*n, r);
        let g = per_rule_base.map(|b| ratio_of(&p, &b));
        let _ = writeln!(
            md,
            "| {n} / {ids} | {} | {:.0} | {} | {} | {:.1} | {} |",
            r.one("entries"),
            r.one("parse_ms"),
            summarize(&r.all("compile_ms", 0)).value(1),
            summarize(&r.all("install_ms", 0)).value(1),
            p.median,
            g.map_or_else(String::new, |g| format!("**{}**", g.ratio()))
        );
    }
    // Growth per rule of each phase from the second size to each larger one: 1 = linear.
    let growth: Vec<String> = match rows.get(1) {
        Some((n0, _, r0)) => rows
            .iter()
            .skip(2)
            .map(|(n1, _, r1)| {
                let g = |key: &str| {
                    let a = summarize(&r0.all(key, 0)).median / *n0 as f64;
                    let b = summarize(&r1.all(key, 0)).median / *n1 as f64;
                    b / a
                };
                format!(
                    "at {n1} rules parsing {:.2}×, compiling {:.2}×, installing {:.2}×",
                    g("parse_ms"),
                    g("compile_ms"),
                    g("install_ms")
                )
            })
            .collect(),
        None => Vec::new(),
    };
    let _ = writeln!(
        md,
        "\nA per-rule ratio of 1 means linear growth. Time per rule relative to {} rules, by phase: {} (the largest \
         size has 5 rules per identity, the others 1).\n",
        rows.get(1).map_or(0, |r| r.0),
        growth.join("; ")
    );
    change_table(&mut md, &rows);
    memory_table(&mut md, &base, &rows);
    let mut goals = Vec::new();
    if let Some(r) = &cluster {
        cluster_section(&mut md, r, agent.as_ref(), &mut goals);
    }
    if let Some((_, _, r)) = rows.iter().find(|(n, _, _)| *n == 10_000) {
        let c = summarize(&r.all("change_ms", 0));
        goals.insert(
            0,
            Goal {
                name: "one-rule change visible in the datapath < 100 ms at 10 000 rules".into(),
                measured: format!("{} ms (parse + compile + install, to the first probe that sees it)", c.value(1)),
                met: c.max < 100.0,
                limit: format!(
                    "the install writes only the entries that change ({} writes), but the whole set is compiled again ({:.1} ms of it)",
                    summarize(&r.all("change_ms", 6)).median,
                    summarize(&r.all("change_ms", 2)).median
                ),
            },
        );
    }
    Ok(Section {
        name: "controlplane",
        title: "Control plane: compile, install, change, memory (`controlplane`)".into(),
        markdown: md,
        goals,
        data: Vec::new(),
    })
}

fn change_table(md: &mut String, rows: &[(usize, usize, ChildResult)]) {
    let _ = writeln!(
        md,
        "\n**One-rule change.** With the policy of each size installed, api's ingress rule from web gains TCP \
         {CHANGE_PORT} (or loses it again, alternating); the clock runs from parsing the changed document, through \
         replacing it in the policy set, compiling the whole set and installing it, until a `BPF_PROG_TEST_RUN` probe \
         of `to_pod` (a SYN web → api:{CHANGE_PORT} of a fresh flow) returns the new verdict. \"writes\": map entries \
         the install wrote or removed (`Datapath::last_install_writes`).\n"
    );
    let _ = writeln!(
        md,
        "| rules | change reaches the datapath (ms) | of which compile | of which install | writes | probes until the flip | ÷ smallest |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    let base_change = rows
        .first()
        .map(|(_, _, r)| summarize(&r.all("change_ms", 0)));
    for (n, _, r) in rows {
        let c = summarize(&r.all("change_ms", 0));
        let _ = writeln!(
            md,
            "| {n} | {} | {:.1} | {:.1} | {:.0} | {:.0} | {} |",
            c.value(1),
            summarize(&r.all("change_ms", 2)).median,
            summarize(&r.all("change_ms", 3)).median,
            summarize(&r.all("change_ms", 6)).max,
            summarize(&r.all("change_ms", 5)).max,
            base_change.map_or_else(String::new, |b| ratio_of(&c, &b).ratio())
        );
    }
    let _ = writeln!(
        md,
        "\nThe verdict flips on the first probe: `install` returns after the `CONFIG` flip, so the latency is parse + \
         compile + install. The install writes only the entries that differ between the generation the inactive slot \
         holds and the new one (docs/architecture.md, \"Atomic updates\"); the compiler still compiles the whole set.\n"
    );
}

/// (map, `max_entries`, kernel memory in bytes) of the baseline process, which loaded the
/// datapath with the default capacities.
fn base_map_rows(base: &ChildResult) -> Vec<(String, f64, f64)> {
    base.values
        .iter()
        .filter_map(|(k, rows)| {
            let name = k.strip_prefix("map_")?;
            let v = rows.first()?;
            Some((name.to_string(), *v.first()?, *v.get(1)?))
        })
        .collect()
}

fn memory_table(md: &mut String, base: &ChildResult, rows: &[(usize, usize, ChildResult)]) {
    let _ = writeln!(
        md,
        "**Memory.** Resident set (`VmRSS` of `/proc/self/status`) of the process after installing, its peak \
         (`VmHWM`, reached while compiling), and the kernel memory of the BPF maps (`memlock` of the map fds, which is \
         not in the RSS; hash maps are preallocated at load, LPM tries allocate per entry). The baseline process \
         only loaded the datapath: RSS {:.1} MiB, BPF maps {:.1} MiB.\n",
        base.one("rss_kb") / 1024.0,
        base.one("memlock_b") / 1_048_576.0
    );
    let _ = writeln!(
        md,
        "| rules | RSS (MiB) | RSS ÷ baseline | peak RSS (MiB) | BPF map memory (MiB) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for (n, _, r) in rows {
        let _ = writeln!(
            md,
            "| {n} | {:.1} | {:.2}× | {:.1} | {:.1} |",
            r.one("rss_kb") / 1024.0,
            r.one("rss_kb") / base.one("rss_kb"),
            r.one("hwm_kb") / 1024.0,
            r.one("memlock_b") / 1_048_576.0
        );
    }
    let maps = base_map_rows(base);
    if maps.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n**Each map at its default size** (`Capacities::default()`, the agent's unless its config sets \
         `capacities`), as the kernel accounts it right after load (`memlock` in the map's fdinfo; per-CPU maps \
         scale with the CPU count, {} here; LPM tries grow as entries are written):\n",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    let _ = writeln!(md, "| map | max_entries | kernel memory at load (MiB) |");
    let _ = writeln!(md, "|---|---|---|");
    for (name, entries, bytes) in maps {
        let _ = writeln!(
            md,
            "| `{name}` | {entries:.0} | {:.2} |",
            bytes / 1_048_576.0
        );
    }
}

/// The cluster size of issue 15: install time and memory.
fn cluster_section(
    md: &mut String,
    r: &ChildResult,
    agent: Option<&Result<AgentSize, String>>,
    goals: &mut Vec<Goal>,
) {
    if r.values.contains_key("failed") {
        let _ = writeln!(
            md,
            "\n**Cluster size: {ASKED_RULES} rules over {CLUSTER_IDENTITIES} identities**: the child failed (its error is in the bench log).\n"
        );
        return;
    }
    let compile = summarize(&r.all("compile_ms", 0));
    let install = summarize(&r.all("install_ms", 0));
    let total = compile.median + install.median;
    let rss = r.one("rss_kb") / 1024.0;
    let _ = writeln!(
        md,
        "\n**Cluster size: {ASKED_RULES} rules over {CLUSTER_IDENTITIES} identities** (one workload each), same \
         generator and child: parse {:.0} ms, compile {} ms, install from scratch {} ms ({:.0} entries written), \
         {} `POLICY` entries per slot, {} identities; a one-rule change {} ms ({:.0} writes). RSS after installing \
         {rss:.1} MiB (peak {:.1} MiB), BPF map memory {:.1} MiB.\n",
        r.one("parse_ms"),
        compile.value(1),
        install.value(1),
        summarize(&r.all("install_ms", 1)).median,
        r.one("entries"),
        r.one("identities"),
        summarize(&r.all("change_ms", 0)).value(1),
        summarize(&r.all("change_ms", 6)).median,
        r.one("hwm_kb") / 1024.0,
        r.one("memlock_b") / 1_048_576.0
    );
    goals.push(Goal {
        name: format!("{ASKED_RULES} rules and {CLUSTER_IDENTITIES} identities install < 2 s"),
        measured: format!(
            "compile {} + install {} ms = {total:.0} ms (medians)",
            compile.value(1),
            install.value(1)
        ),
        met: total < 2000.0,
        limit: "compile and install from scratch, both measured in the same child".into(),
    });
    let child_rss = format!(
        "bench child (the set, the compiled generation and the datapath's copy of both slots): {rss:.1} MiB after \
         installing, peak {:.1} MiB",
        r.one("hwm_kb") / 1024.0
    );
    match agent {
        Some(Ok(a)) => {
            let _ = writeln!(
                md,
                "A real `enforcer agent` (node namespace, default capacities) given the same policy as one file \
                 ({:.1} MiB of YAML) through its API: `apply` (parse, compile, install, persist) {:.0} ms; its RSS \
                 after it {:.1} MiB (peak {:.1} MiB).\n",
                a.yaml_mib, a.apply_ms, a.rss_mib, a.hwm_mib
            );
            goals.push(Goal {
                name: "agent RSS at that size < 256 MiB".into(),
                measured: format!(
                    "agent {:.1} MiB after applying (peak {:.1} MiB); {child_rss}",
                    a.rss_mib, a.hwm_mib
                ),
                met: a.rss_mib < 256.0,
                limit: String::new(),
            });
        }
        Some(Err(e)) => goals.push(Goal {
            name: "agent RSS at that size < 256 MiB".into(),
            measured: format!("the agent was not measured; {child_rss}"),
            met: false,
            limit: format!("the agent failed: {e}"),
        }),
        None => {}
    }
}
