//! `datapath` and `scale`: nanoseconds per packet through the real programs (`BPF_PROG_TEST_RUN`),
//! as ratios to an empty program of the same hook, at one policy size or across sizes.

use std::{fmt::Write as _, net::IpAddr, time::Instant};

use anyhow::Result;
use enforcer::policy::compile;
use enforcer_common::{
    programs, DIR_EGRESS, DIR_INGRESS, REASON_DEFAULT_DENY, REASON_ESTABLISHED, REASON_SPOOFED,
    VERDICT_ALLOW, VERDICT_DENY,
};
use enforcer_tests::frames::{Frame, L4};

use super::{
    cref,
    policygen::{generate, test_context, Endpoints},
    stats::{ratio_of, summarize, Summary},
    testrun::{
        measure_new_flows, measure_row, new_flow_cost, Bench, NewFlow, Row, RowResult, TC_PASS,
        TC_SHOT, XDP_DROP, XDP_PASS,
    },
    Config, Goal, Section,
};

fn syn(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Vec<u8> {
    Frame::tcp_syn(src, dst, sport, dport).build()
}

fn ack(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Vec<u8> {
    Frame::new(
        src,
        dst,
        L4::Tcp {
            sport,
            dport,
            flags: 0x10,
        },
    )
    .build()
}

/// Which rows to measure.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Set {
    Full,
    Scale,
}

fn rows(ep: &Endpoints, set: Set) -> Vec<Row> {
    let mut out = Vec::new();
    for (program, dir) in [
        (programs::FROM_POD, DIR_EGRESS),
        (programs::TO_POD, DIR_INGRESS),
    ] {
        let est = (dir, VERDICT_ALLOW, REASON_ESTABLISHED);
        let deny = (dir, VERDICT_DENY, REASON_DEFAULT_DENY);
        let fam: &[usize] = if set == Set::Full { &[0, 1] } else { &[0] };
        for &f in fam {
            let v = if f == 0 { "IPv4" } else { "IPv6" };
            if set == Set::Full || program == programs::FROM_POD {
                out.push(Row {
                    label: format!("established flow, TCP ACK, {v}"),
                    program,
                    frame: ack(ep.web[f], ep.api[f], 40_000, 8080),
                    prime: Some(syn(ep.web[f], ep.api[f], 40_000, 8080)),
                    expect: TC_PASS,
                    counter: Some(est),
                    events: false,
                });
            }
            if set == Set::Full && f == 0 {
                // The reply direction of the flow the *other* hook judged: found by the first
                // conntrack lookup.
                out.push(Row {
                    label: format!("established reply, TCP ACK, {v}"),
                    program,
                    frame: ack(ep.api[f], ep.web[f], 8080, 40_001),
                    prime: None,
                    expect: TC_PASS,
                    counter: Some(est),
                    events: false,
                });
            }
            out.push(Row {
                label: format!("denied new flow, TCP SYN, {v}"),
                program,
                frame: syn(ep.web[f], ep.other[f], 40_002, 8080),
                prime: None,
                expect: TC_SHOT,
                counter: Some(deny),
                events: true,
            });
        }
    }
    let fam: &[usize] = if set == Set::Full { &[0, 1] } else { &[0] };
    for &f in fam {
        let v = if f == 0 { "IPv4" } else { "IPv6" };
        out.push(Row {
            label: format!("TCP SYN, {v} (genuine source: passed on to tc)"),
            program: programs::XDP_POD,
            frame: syn(ep.web[f], ep.api[f], 40_003, 8080),
            prime: None,
            expect: XDP_PASS,
            counter: None,
            events: false,
        });
    }
    if set == Set::Full {
        out.push(Row {
            label: "spoofed source (dropped, event)".into(),
            program: programs::XDP_POD,
            frame: syn(
                "10.99.0.1".parse().expect("literal"),
                ep.api[0],
                40_004,
                8080,
            ),
            prime: None,
            expect: XDP_DROP,
            counter: Some((DIR_EGRESS, VERDICT_DENY, REASON_SPOOFED)),
            events: true,
        });
    }
    out
}

/// Prime the reply rows: the flow web:40001 → api:8080 judged by the other hook.
fn prime_replies(b: &Bench, ep: &Endpoints) -> Result<()> {
    let f = syn(ep.web[0], ep.api[0], 40_001, 8080);
    b.run(programs::FROM_POD, &f, 1)?;
    b.run(programs::TO_POD, &f, 1)?;
    Ok(())
}

/// Everything measured at one policy size.
pub struct SizeResult {
    pub rules: usize,
    pub identities: usize,
    pub policy_entries: usize,
    pub rows: Vec<RowResult>,
    /// (program, new-flow extra, derived new-flow cost, ratio to the same hook's empty program)
    pub new_flows: Vec<(&'static str, NewFlow, Summary, Summary)>,
    /// (program, first packet of a fresh denied flow: derived cost, ratio to the empty program)
    pub first_denied: Vec<(&'static str, Summary, Summary)>,
    pub empty_xdp: Summary,
    pub empty_tc: Summary,
    /// The C reference (`cref`) of the established and denied-new rows.
    pub reference: Vec<ReferenceRow>,
    /// Why the C reference was not measured at all (`datapath` only).
    pub reference_missing: Option<String>,
}

/// The C reference on one row of the enforcer.
pub struct ReferenceRow {
    /// The enforcer's program and the row's label.
    pub program: &'static str,
    pub label: String,
    /// The reference's cost and enforcer ÷ reference, or why it was not measured.
    pub measured: Result<(Summary, Summary), String>,
}

/// The C reference program of a hook, for rows it mirrors (established and denied new flows).
fn reference_of(row: &Row) -> Option<&'static str> {
    let mirrored = row.label.starts_with("established") || row.label.starts_with("denied new flow");
    match row.program {
        p if p == programs::FROM_POD && mirrored => Some(cref::FROM_POD),
        p if p == programs::TO_POD && mirrored => Some(cref::TO_POD),
        _ => None,
    }
}

/// The C reference on `row`'s frame, right after the enforcer's row `r`: its cost and enforcer
/// ÷ reference. The same checks as the enforcer's row (return value, the counter moves by
/// `repeat`): a reference that does other work fails them.
fn measure_reference(
    b: &mut Bench,
    cfg: &Config,
    row: &Row,
    r: &RowResult,
    program: &'static str,
) -> Result<(Summary, Summary), String> {
    let c_row = Row {
        label: row.label.clone(),
        program,
        frame: row.frame.clone(),
        prime: None,
        expect: row.expect,
        counter: row.counter,
        events: row.events,
    };
    let c = measure_row(b, &c_row, cfg.repeat, cfg.trials).map_err(|e| format!("{e:#}"))?;
    Ok((c.cost, ratio_of(&r.cost, &c.cost)))
}

/// Every row of `set`, each followed by the C reference on it if `with_reference` and it mirrors
/// the row.
fn measure_rows(
    bench: &mut Bench,
    cfg: &Config,
    ep: &Endpoints,
    set: Set,
    with_reference: bool,
) -> Result<(Vec<RowResult>, Vec<ReferenceRow>)> {
    let mut results = Vec::new();
    let mut reference = Vec::new();
    // For profiling one kind of packet (`perf record -a` around the run): only rows whose
    // "program label" contains ENFORCER_BENCH_ONLY.
    let only = std::env::var("ENFORCER_BENCH_ONLY").ok();
    for row in rows(ep, set).into_iter().filter(|r| {
        only.as_ref()
            .is_none_or(|o| format!("{} {}", r.program, r.label).contains(o.as_str()))
    }) {
        let r = measure_row(bench, &row, cfg.repeat, cfg.trials)?;
        eprintln!(
            "    {:<9} {:<52} {:>7.1} ns  {}",
            r.program,
            r.label,
            r.cost.median,
            r.ratio.ratio()
        );
        if let Some(program) = reference_of(&row).filter(|_| with_reference) {
            let measured = measure_reference(bench, cfg, &row, &r, program);
            match &measured {
                Ok((cost, ratio)) => eprintln!(
                    "    {program:<15} {:<46} {:>7.1} ns  enforcer ÷ C {}",
                    row.label,
                    cost.median,
                    ratio.ratio()
                ),
                Err(e) => eprintln!("    {program:<15} {}: not measured: {e}", row.label),
            }
            reference.push(ReferenceRow {
                program: row.program,
                label: row.label.clone(),
                measured,
            });
        }
        results.push(r);
    }
    Ok((results, reference))
}

fn measure_size(cfg: &Config, rules: usize, identities: usize, set: Set) -> Result<SizeResult> {
    let ep = Endpoints::default();
    let started = Instant::now();
    let g = generate(rules, identities, &ep)?;
    let compiled = compile(&g.set, &test_context(&ep));
    eprintln!(
        "  {rules} rules / {} identities: {} policy entries (generated, parsed and compiled in {:.1} s)",
        g.identities,
        compiled.policy.len(),
        started.elapsed().as_secs_f64()
    );
    let mut b = if set == Set::Full {
        Bench::with_reference(&compiled, &ep)?
    } else {
        Bench::new(&compiled, &ep)?
    };
    let reference_missing = match (&b.reference, set) {
        (Err(e), Set::Full) => {
            eprintln!("    C reference not measured: {e}");
            Some(e.clone())
        }
        _ => None,
    };
    prime_replies(&b, &ep)?;
    let (results, reference) = measure_rows(&mut b, cfg, &ep, set, reference_missing.is_none())?;
    let empty_tc = summarize(
        &results
            .iter()
            .filter(|r| r.program != programs::XDP_POD)
            .flat_map(|r| r.empty_samples.iter().copied())
            .collect::<Vec<_>>(),
    );
    let empty_xdp = summarize(
        &results
            .iter()
            .filter(|r| r.program == programs::XDP_POD)
            .flat_map(|r| r.empty_samples.iter().copied())
            .collect::<Vec<_>>(),
    );
    let mut new_flows = Vec::new();
    let mut first_denied = Vec::new();
    for program in [programs::FROM_POD, programs::TO_POD] {
        let Some(est) = results.iter().find(|r| {
            r.program == program && r.label.starts_with("established flow, TCP ACK, IPv4")
        }) else {
            continue;
        };
        let est_frame = ack(ep.web[0], ep.api[0], 40_000, 8080);
        let (web, api, other) = (ep.web[0], ep.api[0], ep.other[0]);
        let nf = measure_new_flows(
            &mut b,
            program,
            &est_frame,
            |sport| syn(web, other, sport, 8080),
            |sport| syn(web, api, sport, 8080),
            cfg.pairs,
        )?;
        let cost = new_flow_cost(&est.cost, &nf.extra);
        let denied = new_flow_cost(&est.cost, &nf.denied_extra);
        let denied_ratio = ratio_of(&denied, &empty_tc);
        eprintln!(
            "    {program:<9} {:<52} {:>7.1} ns  {}",
            FIRST_DENIED_LABEL,
            denied.median,
            denied_ratio.ratio(),
        );
        first_denied.push((program, denied, denied_ratio));
        let ratio = ratio_of(&cost, &empty_tc);
        eprintln!(
            "    {program:<9} {:<52} {:>7.1} ns  {} (single-run extra {:.1} ns over established)",
            "new allowed flow, TCP SYN, IPv4",
            cost.median,
            ratio.ratio(),
            nf.extra.median
        );
        new_flows.push((program, nf, cost, ratio));
    }
    Ok(SizeResult {
        rules: g.rules,
        identities: g.identities,
        policy_entries: compiled.policy.len(),
        rows: results,
        new_flows,
        first_denied,
        empty_xdp,
        empty_tc,
        reference,
        reference_missing,
    })
}

fn table_rows(s: &SizeResult, out: &mut String) {
    let _ = writeln!(
        out,
        "| program (hook) | packet | ns/packet, median (min–max) | added to the empty program (ns) | ÷ empty program of the hook, median (min–max) | C reference ns/packet | enforcer ÷ C reference ² |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    let hook = |p: &str| {
        if p == programs::XDP_POD {
            "XDP"
        } else if p == programs::FROM_POD {
            "tc ingress"
        } else {
            "tc egress"
        }
    };
    for program in [programs::FROM_POD, programs::TO_POD, programs::XDP_POD] {
        for (p, _, cost, ratio) in &s.new_flows {
            if *p == program {
                let _ = writeln!(
                    out,
                    "| `{p}` ({}) | {NEW_LABEL} | {} | {:.0} | **{}** | | |",
                    hook(p),
                    cost.value(1),
                    cost.median - s.empty_tc.median,
                    ratio.ratio()
                );
            }
        }
        for (p, cost, ratio) in &s.first_denied {
            if *p == program {
                let _ = writeln!(
                    out,
                    "| `{p}` ({}) | {FIRST_DENIED_LABEL} ¹ | {} | {:.0} | **{}** | | |",
                    hook(p),
                    cost.value(1),
                    cost.median - s.empty_tc.median,
                    ratio.ratio()
                );
            }
        }
        for r in s.rows.iter().filter(|r| r.program == program) {
            let (c_cost, c_ratio) = reference_cells(s, r);
            let _ = writeln!(
                out,
                "| `{}` ({}) | {} | {} | {:.0} | **{}** | {c_cost} | {c_ratio} |",
                r.program,
                hook(r.program),
                r.label,
                r.cost.value(1),
                r.cost.median
                    - if r.program == programs::XDP_POD {
                        s.empty_xdp.median
                    } else {
                        s.empty_tc.median
                    },
                r.ratio.ratio()
            );
        }
    }
    let _ = writeln!(
        out,
        "| `bench_empty_tc` (tc) | any (baseline) | {} | 0 | 1 | | |",
        s.empty_tc.value(1)
    );
    let _ = writeln!(
        out,
        "| `bench_empty_xdp` (XDP) | any (baseline) | {} | 0 | 1 | | |",
        s.empty_xdp.value(1)
    );
}

/// The C reference's cells of row `r`: empty for rows it does not mirror.
fn reference_cells(s: &SizeResult, r: &RowResult) -> (String, String) {
    match s
        .reference
        .iter()
        .find(|c| c.program == r.program && c.label == r.label)
        .map(|c| &c.measured)
    {
        Some(Ok((cost, ratio))) => (cost.value(1), format!("**{}**", ratio.ratio())),
        Some(Err(_)) => ("not measured ³".into(), String::new()),
        None if s.reference_missing.is_some() && reference_of_label(r) => {
            ("not measured ³".into(), String::new())
        }
        None => (String::new(), String::new()),
    }
}

fn reference_of_label(r: &RowResult) -> bool {
    r.program != programs::XDP_POD
        && (r.label.starts_with("established") || r.label.starts_with("denied new flow"))
}

fn find<'a>(s: &'a SizeResult, program: &str, prefix: &str) -> Option<&'a RowResult> {
    s.rows
        .iter()
        .find(|r| r.program == program && r.label.starts_with(prefix))
}

pub fn run_datapath(cfg: &Config) -> Result<Section> {
    let rules = cfg.datapath_rules;
    eprintln!("datapath: {} repeats × {} trials", cfg.repeat, cfg.trials);
    let s = measure_size(cfg, rules, rules, Set::Full)?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Policy: {} rules over {} identities (services, one workload each) → {} `POLICY` trie entries per slot. \
         Each figure: `BPF_PROG_TEST_RUN` with `repeat = {}`, {} trials; in each trial the empty program of the same hook \
         (`bench_empty_tc` / `bench_empty_xdp`, which only return \"pass\") runs the same frame right before, and the ratio is \
         taken trial by trial. Every measured run is checked: return value, and the datapath counter of the expected \
         (direction, verdict, reason) must move by exactly `repeat` (so an \"established\" row really took the conntrack path). \
         The kernel reports whole nanoseconds per repeat (rounded down), so a figure may read up to 1 ns low: up to 3 % of \
         the empty programs. The empty programs are not free under `BPF_PROG_TEST_RUN`: they cost the test loop \
         (`bpf_test_run`, bottom halves off and on, the timer), which a real hook replaces with its own dispatch; the \
         \"added\" column is what the enforcer's code adds to that.\n",
        s.rules, s.identities, s.policy_entries, cfg.repeat, cfg.trials
    );
    table_rows(&s, &mut md);
    let nf_note = s
        .new_flows
        .iter()
        .map(|(p, nf, _, _)| {
            format!(
                "`{p}`: {} pairs; single runs (medians): new {:.0} ns, established {:.0} ns, first denied {:.0} ns, empty {:.0} ns; \
                 extra {:.0} ns [IQR {:.0}–{:.0}]",
                nf.pairs, nf.single_new.median, nf.single_est.median, nf.single_denied.median,
                nf.single_empty.median, nf.extra.median, nf.extra.q1, nf.extra.q3
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let _ = writeln!(
        md,
        "\n¹ A new allowed flow cannot be repeated: its first packet creates the conntrack entry, so repeats 2..N of the \
         same SYN are \"established\". It is measured as single runs (`repeat = 1`) of SYNs of fresh flows (a new source port \
         each), each paired with a single run of the established ACK; the kernel's fixed per-run timing overhead cancels in \
         the difference, and the new-flow cost is the established cost above plus the median extra (spread: established \
         min–max plus the extra's IQR). {nf_note}. Single runs start with colder caches than a 1 000 000-repeat loop, so \
         the extra is if anything an overestimate. The \"denied new flow, first packet\" rows are measured the same \
         way (single runs of the first SYN of a fresh denied flow, a new source port each, paired with the established \
         ACK): the full judgment (2 identity hash lookups, 2 `POLICY` trie lookups: the peer's table misses, the \
         any-peer table holds the default deny), the `DENIED_FLOWS` insert and the drop event. The repeated \
         \"denied new flow\" rows send one denied flow again and again: a denied flow never creates a conntrack \
         entry, and its repeats hit the recently-denied cache (`enforcer-ebpf/src/denied.rs`): repeats 2..N pay the \
         `CONNTRACK` miss, one `DENIED_FLOWS` hash hit (before anti-spoofing and the judgment, which they skip) and the \
         counters; the flow's first drop is reported, later ones at most once per second (events drained between \
         batches of 8 192, as the agent would).\n\n\
         `xdp_pod` does no policy lookup: it parses, drops malformed and spoofed packets (an `ENDPOINTS` hash lookup) and \
         passes everything else to `from_pod`, which judges the policy. Its cost does not depend on the packet kind or the \
         policy size."
    );
    reference_note(&s, &mut md);
    let mut goals = datapath_goals(&s);
    goals.extend(reference_goal(&s));
    Ok(Section {
        name: "datapath",
        title: "Datapath cost per packet (`datapath`)".into(),
        markdown: md,
        goals,
        data: Vec::new(),
    })
}

/// Notes ² and ³ of the table: what the C reference is, and why a row has none.
fn reference_note(s: &SizeResult, md: &mut String) {
    let _ = writeln!(
        md,
        "\n² The C reference (`tests/src/bench/cref/reference.c`, issue 15): the work of `from_pod` and `to_pod` \
         for a whole TCP or UDP packet written as plain C (the parse onto the stack, one `CONFIG` and one `CONNTRACK` \
         lookup, the established fast path with `from_pod`'s anti-spoofing proof in the entry, the `ENDPOINTS` check, \
         two `IDENTITIES` lookups with the `CIDR_IDENTITIES` fallback, the `POLICY` trie for the peer then any peer, \
         the `DENIED_FLOWS` drop aggregation, the counters and events), compiled by this run with `clang-22 -target \
         bpf -O2` and loaded by aya on the maps of the datapath measured here. Its structs mirror `enforcer-common` \
         (`cref/maps.h`; the bench generates the constants and a `_Static_assert` of every size and field offset from \
         `enforcer_common::layout`, so a layout that drifts stops the build of the reference). Each of its rows runs \
         right after the enforcer's on the same frame and state, with the same checks (return value; the expected \
         counter moves by exactly `repeat`, so the reference took the same path); enforcer ÷ reference is the ratio \
         of the medians (range from the extremes of both). It does not mirror what no row here exercises (VLAN tags, \
         fragments, IPv6 extension headers, ICMP, rate limits, re-judging under a new generation): a packet that \
         needs it passes uncounted, which fails a row's counter check."
    );
    let mut missing = reference_failures(s);
    if let Some(e) = &s.reference_missing {
        missing.insert(
            0,
            format!("the reference could not be built or loaded: {e}"),
        );
    }
    if !missing.is_empty() {
        let _ = writeln!(md, "\n³ Not measured: {}.", missing.join("; "));
    }
}

/// The rows the C reference could not be measured on, and why.
fn reference_failures(s: &SizeResult) -> Vec<String> {
    s.reference
        .iter()
        .filter_map(|c| {
            c.measured
                .as_ref()
                .err()
                .map(|e| format!("`{}` {}: {e}", c.program, c.label))
        })
        .collect()
}

/// Enforcer ÷ C reference ≤ 1.2 on every established and denied-new row.
fn reference_goal(s: &SizeResult) -> Option<Goal> {
    let name = "enforcer ÷ C reference ≤ 1.2 (established and denied-new rows)".to_string();
    if let Some(e) = &s.reference_missing {
        return Some(Goal {
            name,
            measured: "not measured".into(),
            met: false,
            limit: format!("the C reference could not be built or loaded: {e}"),
        });
    }
    let measured: Vec<(&str, &str, Summary)> = s
        .reference
        .iter()
        .filter_map(|c| {
            c.measured
                .as_ref()
                .ok()
                .map(|(_, r)| (c.program, c.label.as_str(), *r))
        })
        .collect();
    let failed = reference_failures(s);
    let (wp, wl, w) = measured
        .iter()
        .max_by(|a, b| a.2.median.total_cmp(&b.2.median))?;
    let met = w.median <= 1.2 && failed.is_empty();
    let limit = if !failed.is_empty() {
        format!("rows not measured: {}", failed.join("; "))
    } else if met {
        String::new()
    } else {
        "what the Rust programs do beyond the reference's work: see \"Measured by hand\" for a profile".into()
    };
    Some(Goal {
        name,
        measured: format!(
            "worst `{wp}` {wl}: {}; all: {}",
            w.ratio(),
            measured
                .iter()
                .map(|(p, l, r)| format!("`{p}` {l} {:.2}×", r.median))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        met,
        limit,
    })
}

/// The worst (highest median ratio) of the rows whose label starts with `prefix`, both tc hooks.
fn worst<'a>(s: &'a SizeResult, prefix: &str) -> Option<&'a RowResult> {
    s.rows
        .iter()
        .filter(|r| r.program != programs::XDP_POD && r.label.starts_with(prefix))
        .max_by(|a, b| a.ratio.median.total_cmp(&b.ratio.median))
}

/// Every row of `prefix` with its ratio, for the "measured" cell.
fn all_ratios(s: &SizeResult, prefix: &str) -> String {
    s.rows
        .iter()
        .filter(|r| r.program != programs::XDP_POD && r.label.starts_with(prefix))
        .map(|r| format!("`{}` {} {:.2}×", r.program, r.label, r.ratio.median))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The goals of issue 15 on the cost per packet, each computed from this run's rows.
fn datapath_goals(s: &SizeResult) -> Vec<Goal> {
    let mut goals = Vec::new();
    if let Some(w) = worst(s, "established flow") {
        goals.push(Goal {
            name: "established flow ≤ 2.5× empty program (both hooks, IPv4 and IPv6)".into(),
            measured: format!(
                "worst `{}` {}: {}; all: {}",
                w.program,
                w.label,
                w.ratio.ratio(),
                all_ratios(s, "established flow")
            ),
            met: w.ratio.median <= 2.5,
            limit: established_limit(s),
        });
    }
    if let Some(w) = worst(s, "denied new flow") {
        goals.push(Goal {
            name: "denied new flow ≤ 4× empty program".into(),
            measured: format!(
                "worst `{}` {}: {}; all: {}",
                w.program,
                w.label,
                w.ratio.ratio(),
                all_ratios(s, "denied new flow")
            ),
            met: w.ratio.median <= 4.0,
            limit: new_flow_limit(s),
        });
    }
    if let Some((p, _, ratio)) = s
        .first_denied
        .iter()
        .max_by(|a, b| a.2.median.total_cmp(&b.2.median))
    {
        goals.push(Goal {
            name: "denied new flow, first packet (full judgment) ≤ 4× empty program".into(),
            measured: format!(
                "worst `{p}` {}; all: {}",
                ratio.ratio(),
                s.first_denied
                    .iter()
                    .map(|(p, _, r)| format!("`{p}` {:.2}×", r.median))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            met: ratio.median <= 4.0,
            limit: new_flow_limit(s),
        });
    }
    if let Some((p, _, _, ratio)) = s
        .new_flows
        .iter()
        .max_by(|a, b| a.3.median.total_cmp(&b.3.median))
    {
        goals.push(Goal {
            name: "new allowed flow ≤ 8× empty program".into(),
            measured: format!(
                "worst `{p}` {}; all: {}",
                ratio.ratio(),
                s.new_flows
                    .iter()
                    .map(|(p, _, _, r)| format!("`{p}` {:.2}×", r.median))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            met: ratio.median <= 8.0,
            limit: new_flow_limit(s),
        });
    }
    goals
}

/// Figures of this run's `datapath` that other sections of the same run quote (never typed in:
/// a section run without `datapath` says it did not measure them).
#[derive(Debug, Clone, Copy)]
pub struct DatapathFigures {
    /// ns `from_pod` and `to_pod` add together to a packet of an established flow.
    pub established_added_ns: f64,
    /// ns `xdp_pod` adds to a packet.
    pub xdp_pod_added_ns: f64,
}

/// Set by [`run_datapath`] for the rest of the run.
pub static MEASURED: std::sync::OnceLock<DatapathFigures> = std::sync::OnceLock::new();

/// The command that profiles the established-flow row by hand (perf cannot run in every bench).
pub const PERF_COMMAND: &str = "ENFORCER_BENCH_ONLY='from_pod established flow, TCP ACK, IPv4' \
     perf record -a -g -- cargo xtask bench datapath";

/// What the established-flow cost is made of, from this run's rows.
fn established_limit(s: &SizeResult) -> String {
    let (Some(fwd), Some(reply), Some(xdp)) = (
        find(s, programs::FROM_POD, "established flow, TCP ACK, IPv4"),
        find(s, programs::FROM_POD, "established reply, TCP ACK, IPv4"),
        find(s, programs::XDP_POD, "TCP SYN, IPv4"),
    ) else {
        return String::new();
    };
    let to_pod = find(s, programs::TO_POD, "established flow, TCP ACK, IPv4")
        .map_or(0.0, |t| t.cost.median - s.empty_tc.median);
    let _ = MEASURED.set(DatapathFigures {
        established_added_ns: fwd.cost.median - s.empty_tc.median + to_pod,
        xdp_pod_added_ns: xdp.cost.median - s.empty_xdp.median,
    });
    format!(
        "the empty program is little more than the test loop ({:.0} ns), while `from_pod` adds {:.0} ns to a packet of \
         an established flow ({:.0} ns to a reply): parsing into the per-CPU scratch, the anti-spoofing `ENDPOINTS` \
         hash lookup (parsing plus that lookup alone: `xdp_pod` adds {:.0} ns), the `CONNTRACK` lookup and the \
         counters. Where the time goes needs a profile, taken by hand (see \"Measured by hand\" at the end).",
        s.empty_tc.median,
        fwd.cost.median - s.empty_tc.median,
        reply.cost.median - s.empty_tc.median,
        xdp.cost.median - s.empty_xdp.median,
    )
}

/// What the new-flow cost is made of, from this run's rows.
fn new_flow_limit(s: &SizeResult) -> String {
    let (Some((_, nf, _, _)), Some(pass), Some(spoofed), Some(denied)) = (
        s.new_flows.iter().find(|(p, ..)| *p == programs::FROM_POD),
        find(s, programs::XDP_POD, "TCP SYN, IPv4"),
        find(s, programs::XDP_POD, "spoofed"),
        find(s, programs::FROM_POD, "denied new flow, TCP SYN, IPv4"),
    ) else {
        return String::new();
    };
    format!(
        "a new flow is judged in tc, not XDP, and pays for the judgment (two `IDENTITIES` lookups, one or two `POLICY` \
         LPM-trie lookups, which grow with the trie: see `scale`), a `CONNTRACK` insert and a ring-buffer event: a \
         repeated denied SYN (conntrack miss + recently-denied cache hit, no judgment) costs {:.0} ns, a single new flow {:.0} ns more than an established \
         packet; the event alone (counter + `EVENTS` reserve/submit + timestamp) is ~{:.0} ns (`xdp_pod` spoofed drop vs \
         pass)",
        denied.cost.median,
        nf.extra.median,
        spoofed.cost.median - pass.cost.median
    )
}

pub fn scale_identities(rules: usize) -> usize {
    rules.min(SCALE_MAX_IDENTITIES)
}

/// The largest size of `scale` and `controlplane`: the cluster size of issue 15 (the default
/// capacities fit it: see `enforcer/src/datapath/capacity.rs`).
pub const LARGEST_RULES: usize = 100_000;

/// The rules of the cluster size `controlplane` installs with its 150 000 identities.
pub const ASKED_RULES: usize = LARGEST_RULES;

/// The largest identity count the scale benchmark uses; above it, services get several rules
/// each.
pub const SCALE_MAX_IDENTITIES: usize = 10_000;

#[expect(clippy::too_many_lines, reason = "one report, read top to bottom")]
pub fn run_scale(cfg: &Config) -> Result<Section> {
    eprintln!(
        "scale: sizes {:?}, {} repeats × {} trials",
        cfg.sizes, cfg.repeat, cfg.trials
    );
    let mut sizes = Vec::new();
    for &n in &cfg.sizes {
        sizes.push(measure_size(cfg, n, scale_identities(n), Set::Scale)?);
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "The same programs and packets at growing policy sizes: for each size a fresh datapath is loaded and the \
         generated policy installed (see [generated policies](#generated-policies)); the flows under test are judged \
         against all of it. `repeat = {}`, {} trials per figure. \"÷ empty\": median ratio to the empty program of the \
         hook, trial by trial; \"÷ {} rules\": that ratio divided by the same packet's at the smallest size (range: \
         from the extremes of both).\n",
        cfg.repeat, cfg.trials, sizes[0].rules
    );
    let _ = writeln!(
        md,
        "| packet | rules / identities (`POLICY` entries) | ns/packet | ÷ empty | ÷ {} rules |",
        sizes[0].rules
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    let mut keys: Vec<(&'static str, String)> = sizes[0]
        .new_flows
        .iter()
        .map(|(p, ..)| (*p, NEW_LABEL.to_string()))
        .collect();
    keys.extend(sizes[0].rows.iter().map(|r| (r.program, r.label.clone())));
    let cell = |s: &SizeResult, program: &str, label: &str| -> Option<(Summary, Summary)> {
        if label == NEW_LABEL {
            s.new_flows
                .iter()
                .find(|(p, ..)| *p == program)
                .map(|(_, _, c, r)| (*c, *r))
        } else {
            s.rows
                .iter()
                .find(|r| r.program == program && r.label == label)
                .map(|r| (r.cost, r.ratio))
        }
    };
    // (packet, growth at the largest size)
    let largest = sizes.iter().map(|s| s.rules).max().unwrap_or(0);
    let mut growth: Vec<(String, Summary)> = Vec::new();
    for (program, label) in &keys {
        let Some((_, base)) = cell(&sizes[0], program, label) else {
            continue;
        };
        for s in &sizes {
            let Some((c, r)) = cell(s, program, label) else {
                continue;
            };
            let g = ratio_of(&r, &base);
            let _ = writeln!(
                md,
                "| `{program}` {label} | {} / {} ({}) | {:.1} | {:.2}× | **{}** |",
                s.rules,
                s.identities,
                s.policy_entries,
                c.median,
                r.median,
                g.ratio()
            );
            if s.rules == largest {
                growth.push((format!("`{program}` {label}"), g));
            }
        }
    }
    let _ = writeln!(
        md,
        "\n¹ New allowed flows as in `datapath` (established cost + single-run extra, {} pairs per size).\n",
        cfg.pairs
    );
    if let Some(big) = sizes.iter().find(|s| s.rules > SCALE_MAX_IDENTITIES) {
        let _ = writeln!(
            md,
            "Above {SCALE_MAX_IDENTITIES} rules the identities stay at {SCALE_MAX_IDENTITIES} and each service gets              several rules ({} rules: {} `POLICY` entries per slot). The datapath was loaded with the default              capacities (`enforcer/src/datapath/capacity.rs`): {} `POLICY` entries and {} identities per slot, {} rule              ids.\n",
            big.rules,
            big.policy_entries,
            enforcer_common::POLICY_CAPACITY,
            enforcer_common::IDENTITY_CAPACITY,
            enforcer_common::RULE_CAPACITY
        );
    }
    let _ = writeln!(
        md,
        "What grows: a packet of an established flow makes no policy lookup and stays flat. A new or denied flow makes \
         two identity lookups (hash: flat) and one or two `POLICY` lookups; `POLICY` is an LPM trie, whose lookup walks \
         more nodes as it fills, so the judgment is not O(1) in the number of rules. To see it: `perf record -a` while \
         `ENFORCER_BENCH_ONLY='from_pod denied' bench datapath` runs (the variable selects rows) puts the kernel's \
         `trie_lookup_elem` about as high as the program's own JITed code.\n"
    );
    let mut goals = Vec::new();
    if let Some((label, g)) = growth
        .iter()
        .max_by(|a, b| a.1.median.total_cmp(&b.1.median))
    {
        goals.push(Goal {
            name: format!(
                "cost({largest} rules) ÷ cost({} rules) ≤ 1.10",
                sizes[0].rules
            ),
            measured: format!(
                "worst: {label} {}; all packets: {}",
                g.ratio(),
                growth
                    .iter()
                    .map(|(l, g)| format!("{l} {:.2}×", g.median))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            met: g.median <= 1.10,
            limit: if g.median <= 1.10 {
                String::new()
            } else {
                "the `POLICY` LPM trie lookups of the judgment grow with the trie (established packets, which skip them, stay flat)".into()
            },
        });
    }
    let data = sizes
        .iter()
        .flat_map(|s| {
            s.rows
                .iter()
                .filter(|r| r.label.starts_with("denied"))
                .map(|r| (format!("testrun {}", r.program), s.rules, r.ratio))
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(Section {
        name: "scale",
        title: "Cost against policy size (`scale`)".into(),
        markdown: md,
        goals,
        data,
    })
}

const NEW_LABEL: &str = "new allowed flow, TCP SYN, IPv4 ¹";

/// The first packet of a denied flow (the full judgment), as opposed to the repeated denied rows.
const FIRST_DENIED_LABEL: &str = "denied new flow, first packet (full judgment), TCP SYN, IPv4";
