//! Documented CLI verbs and agent flags, each driven through the real binary, with a check that
//! fails if the feature broke: `policy diff`, `apply --dry-run`, `policy graph`, `completions`,
//! `uninstall` / `agent --uninstall`, `flows --follow` / `--service`, `agent --config` (and its
//! `socket` key), `--xdp-pods`, `--log-format`, a missing uplink (warned, still ready), a failed
//! attach (`/readyz` 503 with the reason until it succeeds), socket takeover, and the
//! `policy get` columns of docs/cli.md.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use enforcer_tests::{
    cluster::{enforcer_bin, AgentProcess},
    fixtures::API_INGRESS_TCP_8080,
    one_node::{text, OneNode},
    run_in_netns, skip_unless_root,
};

/// The agent's metrics address inside the node namespace (the harness's `--metrics-addr`).
const METRICS: &str = "127.0.0.1:9963";

/// `GET path` on the agent's HTTP listener in namespace `ns`: (status line, body).
fn http_get(ns: &str, path: &str) -> Result<(String, String)> {
    let path = path.to_string();
    run_in_netns(ns, move || {
        let mut s = TcpStream::connect(METRICS)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        s.read_to_string(&mut response)?;
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        Ok((
            head.lines().next().unwrap_or("").to_string(),
            body.to_string(),
        ))
    })
}

fn ok(o: &Output) -> Result<String> {
    if !o.status.success() {
        bail!("command failed ({}):\n{}", o.status, text(o));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

#[test]
fn a_missing_uplink_is_warned_about_and_the_agent_stays_ready() -> Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    let e = OneNode::start("uplink", &["--uplink", "nosuch0"])?;
    e.agent.apply("p.yaml", API_INGRESS_TCP_8080)?;
    let ns = e.topo.node_netns("n1")?.to_string();
    let (status, body) = http_get(&ns, "/readyz")?;
    assert!(status.contains("200"), "/readyz: {status} {body}");
    assert!(body.starts_with("ready (generation"), "{body}");
    let s = e.agent.status()?;
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("uplink nosuch0: no such interface")),
        "status warnings: {:?}",
        s.warnings
    );
    let table = ok(&e.cli(&["status"])?)?;
    assert!(table.contains("warning:     uplink nosuch0"), "{table}");
    let log = std::fs::read_to_string(&e.agent.log)?;
    assert!(log.contains("the uplink interface does not exist"), "{log}");
    // The pods are still enforced.
    assert!(e.reaches(8080)?, "allowed flow");
    assert!(!e.reaches(9090)?, "denied flow");
    Ok(())
}

/// Our own `xdp_uplink` program attached (by this test process, unpinned) to the uplink of the
/// node namespace `ns`: XDP takes one program per interface, so the agent's attach fails while
/// this lives. Dropping it detaches the program.
fn occupy_uplink(ns: &str) -> Result<enforcer::datapath::Datapath> {
    run_in_netns(ns, || {
        let mut dp = enforcer::datapath::Datapath::load(None)?;
        let name = std::ffi::CString::new(enforcer_tests::UPLINK_IFNAME)?;
        // SAFETY: if_nametoindex reads a NUL-terminated string we own.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        anyhow::ensure!(ifindex != 0, "no uplink in the node namespace");
        dp.attach_uplink(enforcer_tests::UPLINK_IFNAME, ifindex)?;
        Ok(dp)
    })
}

#[test]
fn a_failed_attach_fails_readyz_with_the_reason_until_it_succeeds() -> Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    let topo = OneNode::topology()?;
    let ns = topo.node_netns("n1")?.to_string();
    let occupant = occupy_uplink(&ns)?;
    let e = OneNode::start_on(topo, "attachfail", &[])?;
    e.agent.apply("p.yaml", API_INGRESS_TCP_8080)?;
    let uplink = enforcer_tests::UPLINK_IFNAME;
    let (status, body) = http_get(&ns, "/readyz")?;
    assert!(
        status.contains("503"),
        "/readyz must fail while {uplink} is not attached: {status} {body}"
    );
    assert!(
        body.contains(&format!("not attached to {uplink}: ")),
        "/readyz names the interface and why: {body}"
    );
    let s = e.agent.status()?;
    assert!(
        s.not_ready
            .iter()
            .any(|r| r.starts_with(&format!("not attached to {uplink}"))),
        "status: {:?}",
        s.not_ready
    );
    assert!(
        !s.interfaces.iter().any(|i| i.role == "uplink"),
        "the uplink is not ours: {s:?}"
    );
    // The pods are still enforced.
    assert!(e.reaches(8080)?, "allowed flow");
    assert!(!e.reaches(9090)?, "denied flow");
    // The interface is freed: a resync attaches it and the agent becomes ready.
    drop(occupant);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http_get(&ns, "/readyz")?;
        if status.contains("200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still not ready 10 s after {uplink} was freed: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = e.agent.status()?;
    assert!(
        s.interfaces.iter().any(|i| i.role == "uplink"),
        "attached at last: {s:?}"
    );
    Ok(())
}

#[test]
fn a_second_agent_on_a_socket_in_use_is_refused() -> Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    let e = OneNode::start("takeover", &[])?;
    let socket = e.agent.socket.display().to_string();
    let log = e.work.0.join("second.log");
    let second_bpffs = PathBuf::from(format!("{}-second", e.agent.bpffs.display()));
    let bin = enforcer_bin()?;
    let mut second = e
        .topo
        .node_command("n1", bin.to_str().unwrap_or("enforcer"))?
        .args(["agent", "--socket", &socket, "--bpffs"])
        .arg(&second_bpffs)
        .arg("--state-dir")
        .arg(e.work.0.join("second-state"))
        .args([
            "--metrics-addr",
            "127.0.0.1:9964",
            "--interfaces",
            "nomatch*",
        ])
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::options().append(true).open(&log)?)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            second.kill()?;
            let _ = second.wait();
            bail!("a second agent kept running on a socket in use");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = enforcer::datapath::unpin_all(&second_bpffs);
    let err = std::fs::read_to_string(&log)?;
    assert!(!status.success(), "{err}");
    assert!(err.contains("is in use"), "{err}");
    // The first agent still answers on it.
    assert_eq!(e.agent.status()?.workloads, 2);
    Ok(())
}

#[test]
fn agent_config_file_keys_are_used() -> Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    let e = OneNode::start("config", &[])?;
    // A second agent in another topology would need its own node; instead, restart this one
    // from a config file alone (no flags): every key must take effect.
    let socket = e.work.0.join("from-config.sock");
    let bpffs = e.agent.bpffs.clone();
    let config = e.write(
        "agent.yaml",
        &format!(
            "interfaces: \"{}\"\nuplink: {}\nsocket: {}\nbpffs: {}\nstateDir: {}\n\
             metricsAddr: 127.0.0.1:9965\nxdpPods: true\nresync: 0.2\n",
            enforcer_tests::HOST_IF_GLOB,
            enforcer_tests::UPLINK_IFNAME,
            socket.display(),
            bpffs.display(),
            e.agent.state_dir.display(),
        ),
    )?;
    let mut first = e;
    first.agent.kill()?;
    let agent = AgentProcess::start_raw(
        &first.topo,
        "n1",
        &first.work.0,
        &["--config", &config],
        (socket.clone(), bpffs),
    )?;
    let s = agent.status()?;
    assert_eq!(s.workloads, 2, "state kept: {s:?}");
    assert!(
        s.interfaces.iter().any(|i| i.role == "uplink"),
        "uplink attached: {s:?}"
    );
    // xdpPods: XDP really is on the pods' host-side veths.
    assert!(
        has_xdp(&first, "web-0")?,
        "xdpPods: no XDP program on web-0's veth"
    );
    // metricsAddr.
    let ns = first.topo.node_netns("n1")?.to_string();
    let body = run_in_netns(&ns, || {
        let mut s = TcpStream::connect("127.0.0.1:9965")?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")?;
        let mut r = String::new();
        s.read_to_string(&mut r)?;
        Ok(r)
    })?;
    assert!(body.ends_with("ok\n"), "{body}");
    // A config file others can write is refused (it names the policy directory and the
    // interfaces): the same rule as for policy files.
    let writable = first.write("writable.yaml", "resync: 1\n")?;
    std::fs::set_permissions(
        &writable,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o666),
    )?;
    let out = cli_in(&first, &["agent", "--config", &writable])?;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("writable.yaml") && t.contains("mode 0666 lets group or others write it"),
        "{t}"
    );
    // An unknown key is refused with the file name.
    let bad = first.write("bad.yaml", "resync: 1\nnoSuchKey: 1\n")?;
    let out = cli_in(&first, &["agent", "--config", &bad])?;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("unknown field `noSuchKey`"),
        "{}",
        text(&out)
    );
    // resync 0 and negative: clear config errors, no panic.
    for (name, value) in [("zero.yaml", "0"), ("negative.yaml", "-1")] {
        let f = first.write(name, &format!("resync: {value}\n"))?;
        let out = cli_in(&first, &["agent", "--config", &f])?;
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{t}");
        assert!(
            t.contains("resync must be a positive number of seconds"),
            "{t}"
        );
        assert!(t.contains(name), "the error names the file: {t}");
        assert!(!t.contains("panicked"), "{t}");
    }
    drop(agent);
    Ok(())
}

/// Run `enforcer ARGS` in the node namespace, without `--socket`.
fn cli_in(e: &OneNode, args: &[&str]) -> Result<Output> {
    let bin = enforcer_bin()?;
    let mut cmd = e
        .topo
        .node_command("n1", bin.to_str().unwrap_or("enforcer"))?;
    Ok(cmd.args(args).output()?)
}

/// Whether `ip -d link show` lists an XDP program on the host side of `pod`'s veth.
fn has_xdp(e: &OneNode, pod: &str) -> Result<bool> {
    let pod_if = e.topo.pod_host_ifname(pod)?.to_string();
    let link = ok(&e
        .topo
        .node_command("n1", "ip")?
        .args(["-d", "link", "show", "dev", &pod_if])
        .output()?)?;
    Ok(link.contains("prog/xdp"))
}

#[test]
fn xdp_pods_flag_puts_xdp_on_the_pod_interfaces() -> Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    let without = OneNode::start("noxdp", &[])?;
    assert!(!has_xdp(&without, "web-0")?, "no XDP without --xdp-pods");
    drop(without);
    let e = OneNode::start("xdppods", &["--xdp-pods"])?;
    assert!(has_xdp(&e, "web-0")?, "--xdp-pods: XDP on web-0's veth");
    assert!(has_xdp(&e, "api-0")?, "--xdp-pods: XDP on api-0's veth");
    e.agent.apply("p.yaml", API_INGRESS_TCP_8080)?;
    assert!(e.reaches(8080)? && !e.reaches(9090)?, "enforced with XDP");
    Ok(())
}

#[test]
fn log_format_json_writes_json_lines() -> Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    let e = OneNode::start("logjson", &["--log-format", "json"])?;
    e.agent.apply("p.yaml", API_INGRESS_TCP_8080)?;
    let log = std::fs::read_to_string(&e.agent.log)?;
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).with_context(|| format!("not JSON: {l}"))?;
        assert!(v.get("level").is_some(), "{l}");
    }
    Ok(())
}

#[test]
fn policy_diff_and_apply_dry_run() -> Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    let e = OneNode::start("diff", &[])?;
    let policy = e.write("p.yaml", API_INGRESS_TCP_8080)?;
    // Dry run: reported, nothing applied, nothing persisted.
    let g0 = e.agent.status()?.generation;
    let dry = ok(&e.cli(&["policy", "apply", "--dry-run", "-f", &policy])?)?;
    assert!(dry.contains("(dry run)"), "{dry}");
    assert_eq!(
        e.agent.status()?.generation,
        g0,
        "a dry run installs nothing"
    );
    assert!(e.reaches(9090)?, "nothing enforced after a dry run");
    let get = e.cli(&["policy", "get", "api-ingress"])?;
    assert!(!get.status.success(), "not stored: {}", text(&get));
    // diff: exit 1 with the change, then 0 once applied.
    let out = e.cli(&["policy", "diff", "-f", &policy])?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("api-ingress"), "{}", text(&out));
    ok(&e.cli(&["policy", "apply", "-f", &policy])?)?;
    let out = e.cli(&["policy", "diff", "-f", &policy])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let changed = e.write("p2.yaml", &API_INGRESS_TCP_8080.replace("8080", "8081"))?;
    let out = e.cli(&["policy", "diff", "-f", &changed])?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("8081"), "{}", text(&out));
    Ok(())
}

#[test]
fn policy_get_columns_are_the_documented_ones() -> Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    let e = OneNode::start("get", &[])?;
    e.agent.apply("p.yaml", API_INGRESS_TCP_8080)?;
    let out = ok(&e.cli(&["policy", "get"])?)?;
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let doc =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/cli.md"))?;
    let documented = doc
        .lines()
        .skip_while(|l| *l != "# enforcer policy get")
        .nth(1)
        .context("docs/cli.md has no `# enforcer policy get` example")?;
    assert_eq!(
        header,
        documented.split_whitespace().collect::<Vec<_>>(),
        "docs/cli.md's `policy get` example must show the real columns"
    );
    assert!(
        out.contains("10.10.2.10"),
        "workload addresses shown:\n{out}"
    );
    Ok(())
}

#[test]
fn flows_follow_streams_new_events_and_service_filters() -> Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    let e = OneNode::start("flows", &[])?;
    e.agent.apply("p.yaml", API_INGRESS_TCP_8080)?;
    // One denied connection before following: `--follow` prints it from the history first.
    assert!(!e.reaches(9090)?, "denied flow");
    let bin = enforcer_bin()?;
    let mut follow = e
        .topo
        .node_command("n1", bin.to_str().unwrap_or("enforcer"))?
        .arg("--socket")
        .arg(&e.agent.socket)
        .args(["flows", "--follow", "--verdict", "denied", "-o", "json"])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = follow.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let to_9090 = |v: &serde_json::Value| v["dst"] == "10.10.2.10" && v["dport"] == 9090;
    let first: serde_json::Value = serde_json::from_str(
        &rx.recv_timeout(Duration::from_secs(10))
            .context("flows --follow printed no history")?,
    )?;
    assert!(to_9090(&first), "history: {first}");
    let since = enforcer_tests::evidence::now_ms();
    // Then new denied connections until one is streamed (events between the history request
    // and the subscription may be missed, so keep trying until the deadline).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = None;
    while seen.is_none() && Instant::now() < deadline {
        assert!(!e.reaches(9090)?, "denied flow");
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            let v: serde_json::Value = serde_json::from_str(&line)?;
            if to_9090(&v) && v["time_ms"].as_u64().is_some_and(|t| t >= since) {
                seen = Some(v);
                break;
            }
        }
    }
    follow.kill()?;
    let _ = follow.wait();
    let v = seen.context("flows --follow streamed no new event of the denied flow within 10 s")?;
    assert_eq!(v["verdict"], "denied");
    // --service keeps the events of that service only.
    let api = ok(&e.cli(&["flows", "--service", "api", "-o", "json"])?)?;
    assert!(api.lines().count() > 0, "no event for api");
    for l in api.lines() {
        let v: serde_json::Value = serde_json::from_str(l)?;
        assert!(
            v["src_identity"] == "api" || v["dst_identity"] == "api",
            "not api's: {l}"
        );
    }
    let none = ok(&e.cli(&["flows", "--service", "nosuch", "-o", "json"])?)?;
    assert_eq!(none.trim(), "", "events for a service nobody runs");
    Ok(())
}

#[test]
fn uninstall_detaches_and_removes_the_pins() -> Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    for how in ["uninstall", "agent --uninstall"] {
        let mut e = OneNode::start("uninstall", &[])?;
        e.agent.apply("p.yaml", API_INGRESS_TCP_8080)?;
        assert!(!e.reaches(9090)?, "denied while the agent runs");
        e.agent.kill()?;
        assert!(
            !e.reaches(9090)?,
            "still denied after the agent died (fail-static)"
        );
        let bpffs = e.agent.bpffs.display().to_string();
        let mut args: Vec<&str> = how.split(' ').collect();
        args.extend(["--bpffs", &bpffs]);
        let out = cli_in(&e, &args)?;
        assert!(out.status.success(), "{how}: {}", text(&out));
        assert!(!e.agent.bpffs.exists(), "{how}: pins left under {bpffs}");
        assert!(e.reaches(9090)?, "{how}: the datapath still enforces");
    }
    Ok(())
}

#[test]
fn policy_graph_dot_and_mermaid() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("enforcer-graph-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("g.yaml");
    std::fs::write(
        &file,
        "apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: api-ingress}
spec:
  service: api
  ingress:
    - from: [{service: web}]
      ports: [{protocol: TCP, port: 8080}]
      rateLimit: {packetsPerSecond: 100}
  ingressDeny:
    - from: [{service: batch}]
---
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: db-audit}
spec:
  service: db
  mode: audit
  ingress:
    - from: [{service: api}]
",
    )?;
    let run = |format: &str| -> Result<String> {
        let out = Command::new(enforcer_bin()?)
            .args(["policy", "graph", "-f"])
            .arg(&file)
            .args(["-o", format])
            .output()?;
        ok(&out)
    };
    let dot = run("dot")?;
    assert!(dot.starts_with("digraph enforcer {"), "{dot}");
    assert!(dot.contains("≤100pps"), "rate limit on the edge:\n{dot}");
    assert!(dot.contains("color=red, style=dashed"), "deny edge:\n{dot}");
    assert!(dot.contains("(audit)"), "audit edge:\n{dot}");
    let mermaid = run("mermaid")?;
    assert!(mermaid.starts_with("flowchart LR"), "{mermaid}");
    assert!(mermaid.contains(" .-x "), "deny edge:\n{mermaid}");
    assert!(mermaid.contains("TCP/8080"), "{mermaid}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn completions_for_every_shell() -> Result<()> {
    for shell in ["bash", "elvish", "fish", "powershell", "zsh"] {
        let out = Command::new(enforcer_bin()?)
            .args(["completions", shell])
            .output()?;
        let script = ok(&out)?;
        assert!(script.contains("enforcer"), "{shell}");
        for verb in ["policy", "flows", "uninstall"] {
            assert!(script.contains(verb), "{shell} completion lacks {verb}");
        }
    }
    let out = Command::new(enforcer_bin()?)
        .args(["completions", "tcsh"])
        .output()?;
    assert!(!out.status.success(), "an unknown shell is refused");
    Ok(())
}

#[test]
fn docs_name_the_layout_version() -> Result<()> {
    let v = enforcer_common::LAYOUT_VERSION;
    let ops = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
    )?;
    assert!(
        ops.contains(&format!("`enforcer-common/src/lib.rs`, currently `{v}`")),
        "docs/operations.md must name LAYOUT_VERSION {v}"
    );
    for (i, _) in ops.match_indices("/sys/fs/bpf/enforcer/v") {
        let rest = &ops[i + "/sys/fs/bpf/enforcer/v".len()..];
        let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
        assert_eq!(
            n,
            v.to_string(),
            "a pin path in docs/operations.md names layout v{n}"
        );
    }
    Ok(())
}
