//! The flow log (`--flow-log`), end to end: real flows through the datapath become JSON lines
//! naming the pods at both ends; the file rotates at its size limit; a sink nobody reads (a FIFO)
//! costs dropped lines, counted, and never stalls the event reader, `enforcer flows` or
//! `/metrics`.

use std::{
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use enforcer_tests::{
    fixtures::API_INGRESS_TCP_8080,
    http_get,
    one_node::{text, OneNode},
    run_in_netns,
};
use serde_json::Value;

const METRICS: &str = "127.0.0.1:9963";

/// Poll `cond` every 50 ms until it gives a value; an error naming `what` after `deadline`.
fn wait_for<T>(
    deadline: Duration,
    what: &str,
    mut cond: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = cond()? {
            return Ok(v);
        }
        ensure!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every line of a flow-log file, parsed (none if it does not exist yet).
fn lines(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("{}: {l}", path.display())))
        .collect()
}

fn metric(node_ns: &str, name: &str) -> Result<u64> {
    let (status, body) = http_get(node_ns, METRICS, "/metrics")?;
    ensure!(status == 200, "/metrics: {status}");
    Ok(body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0))
}

/// The last line of a flow web-0 → api-0:`port` judged by api's ingress with `verdict`
/// (Hubble's name), if logged.
fn find<'a>(lines: &'a [Value], port: u16, verdict: &str) -> Option<&'a Value> {
    lines.iter().rev().find(|l| {
        let f = &l["flow"];
        f["verdict"] == verdict
            && f["l4"]["TCP"]["destination_port"] == port
            && f["IP"]["source"] == "10.10.1.10"
            && f["traffic_direction"] == "INGRESS"
    })
}

#[test]
fn an_allowed_and_a_denied_flow_are_logged_with_both_pods_named() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let dir = enforcer_tests::cluster::WorkDir::new("flowlog-pods-log")?;
    let log = dir.0.join("flows.json");
    let log_arg = log.display().to_string();
    let env = OneNode::start(
        "flowlog-pods",
        &["--flow-log", &log_arg, "--node-name", "n1"],
    )?;
    // Both servers answer before any policy: the deny below is the policy's.
    ensure!(env.reaches(8080)? && env.reaches(9090)?, "servers answer");
    env.agent.apply("policy.yaml", API_INGRESS_TCP_8080)?;
    ensure!(env.reaches(8080)?, "8080 is allowed");
    ensure!(!env.reaches(9090)?, "9090 is denied");
    let (allowed, denied) = wait_for(Duration::from_secs(5), "both lines", || {
        let l = lines(&log)?;
        Ok(find(&l, 8080, "FORWARDED")
            .cloned()
            .zip(find(&l, 9090, "DROPPED").cloned()))
    })?;
    for (line, want) in [(&allowed, "FORWARDED"), (&denied, "DROPPED")] {
        let f = &line["flow"];
        ensure!(f["verdict"] == want, "{line}");
        ensure!(f["source"]["namespace"] == "default", "{line}");
        ensure!(f["source"]["pod_name"] == "web-0", "{line}");
        ensure!(f["destination"]["pod_name"] == "api-0", "{line}");
        ensure!(f["destination"]["namespace"] == "default", "{line}");
        let labels = f["source"]["labels"].as_array().context("labels")?;
        ensure!(
            labels
                .iter()
                .any(|l| l.as_str().is_some_and(|l| l.ends_with("=web"))),
            "the service label: {line}"
        );
        ensure!(line["node_name"] == "n1", "{line}");
        let time = line["time"].as_str().context("time")?;
        ensure!(time.parse::<jiff::Timestamp>().is_ok(), "RFC 3339: {time}");
        ensure!(f["enforcer"]["generation"].as_u64() > Some(0), "{line}");
    }
    let d = &denied["flow"];
    ensure!(d["drop_reason_desc"] == "DEFAULT_DENY", "{denied}");
    ensure!(d["enforcer"]["reason"] == "default_deny", "{denied}");
    ensure!(d["enforcer"]["policy"] == "default-deny", "{denied}");
    ensure!(d["enforcer"]["rule"] == "api/ingress", "{denied}");
    let a = &allowed["flow"];
    ensure!(
        a["ingress_allowed_by"][0]["name"] == "api-ingress",
        "{allowed}"
    );
    ensure!(
        a["ingress_allowed_by"][0]["rule"] == "ingress[0]",
        "{allowed}"
    );
    ensure!(a["enforcer"]["kind"] == "FlowPolicy", "{allowed}");
    let node_ns = env.topo.node("n1")?.netns().to_string();
    ensure!(metric(&node_ns, "enforcer_flowlog_lines_total")? >= 2);
    ensure!(metric(&node_ns, "enforcer_flowlog_dropped_total")? == 0);
    Ok(())
}

/// Send one UDP datagram from web-0 to each of api-0's `ports` (each a new flow, each denied by
/// the default deny once api is isolated).
fn udp_burst(web_ns: &str, ports: std::ops::Range<u16>) -> Result<()> {
    run_in_netns(web_ns, move || {
        let s = UdpSocket::bind("10.10.1.10:0")?;
        for port in ports {
            let _ = s.send_to(b"x", SocketAddr::from(([10, 10, 2, 10], port)));
        }
        Ok(())
    })
}

#[test]
fn the_file_rotates_at_its_size_limit_keeping_n_files() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let dir = enforcer_tests::cluster::WorkDir::new("flowlog-rotate-log")?;
    let log = dir.0.join("flows.json");
    let log_arg = log.display().to_string();
    let env = OneNode::start(
        "flowlog-rotate",
        &[
            "--flow-log",
            &log_arg,
            "--flow-log-max-size",
            "4KiB",
            "--flow-log-files",
            "2",
        ],
    )?;
    env.agent.apply("policy.yaml", API_INGRESS_TCP_8080)?;
    udp_burst(&env.web_ns, 30000..30100)?;
    let node_ns = env.topo.node("n1")?.netns().to_string();
    let written = wait_for(Duration::from_secs(5), "100 lines written", || {
        let n = metric(&node_ns, "enforcer_flowlog_lines_total")?;
        Ok((n >= 100).then_some(n))
    })?;
    let numbered = |n: usize| PathBuf::from(format!("{}.{n}", log.display()));
    let mut kept = 0;
    for p in [log.clone(), numbered(1), numbered(2)] {
        let size = std::fs::metadata(&p)
            .with_context(|| format!("{} exists", p.display()))?
            .len();
        ensure!(size <= 4096, "{}: {size} bytes", p.display());
        let l = lines(&p)?;
        ensure!(!l.is_empty(), "{} has lines", p.display());
        kept += l.len();
    }
    ensure!(!numbered(3).exists(), "only 2 rotated files are kept");
    ensure!(
        (kept as u64) < written,
        "older lines were rotated away ({kept} kept of {written})"
    );
    Ok(())
}

#[test]
fn a_stalled_sink_drops_and_counts_without_stalling_flows_or_metrics() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let dir = enforcer_tests::cluster::WorkDir::new("flowlog-fifo-log")?;
    let fifo = dir.0.join("flows.fifo");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status()?;
    ensure!(status.success(), "mkfifo");
    let fifo_arg = fifo.display().to_string();
    let env = OneNode::start("flowlog-fifo", &["--flow-log", &fifo_arg])?;
    env.agent.apply("policy.yaml", API_INGRESS_TCP_8080)?;
    let node_ns = env.topo.node("n1")?.netns().to_string();
    // Nobody opens the FIFO: the writer blocks opening it, and the queue fills.
    udp_burst(&env.web_ns, 20000..40000)?;
    let dropped = wait_for(Duration::from_secs(10), "lines dropped", || {
        let n = metric(&node_ns, "enforcer_flowlog_dropped_total")?;
        Ok((n > 0).then_some(n))
    })?;
    // The event reader goes on: a flow after the burst reaches `enforcer flows` at once, and
    // /metrics answers.
    ensure!(env.reaches(8080)?, "8080 is allowed");
    ensure!(!env.reaches(9090)?, "9090 is denied");
    let start = Instant::now();
    wait_for(Duration::from_secs(2), "the denied flow in `flows`", || {
        let out = env.cli(&["flows", "--verdict", "denied", "-o", "json"])?;
        ensure!(out.status.success(), "{}", text(&out));
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.contains("\"dport\":9090"))
            .then_some(()))
    })?;
    let (code, _) = http_get(&node_ns, METRICS, "/metrics")?;
    let took = start.elapsed();
    ensure!(
        code == 200 && took < Duration::from_secs(3),
        "{code} after {took:?}"
    );
    eprintln!(
        "stalled sink: {dropped} events dropped when first seen; the later flow in `flows` and \
         /metrics answered {took:?} after the probes"
    );
    ensure!(metric(&node_ns, "enforcer_flowlog_dropped_total")? >= dropped);
    // A reader comes: the writer goes on with what the queue holds.
    let fifo_read = fifo.clone();
    let first = std::thread::spawn(move || -> Result<String> {
        use std::io::BufRead as _;
        let mut r = std::io::BufReader::new(std::fs::File::open(&fifo_read)?);
        let mut line = String::new();
        r.read_line(&mut line)?;
        Ok(line)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    let v: Value = serde_json::from_str(&first).with_context(|| first.clone())?;
    ensure!(v["flow"]["IP"]["source"] == "10.10.1.10", "{first}");
    Ok(())
}
