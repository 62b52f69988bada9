//! Issue 16 (userspace): the agent fails static on bad inputs at startup, its HTTP listener
//! survives hostile clients, it drops privileges, and it leaves no stale pins. Real agents in
//! network namespaces, real traffic; see docs/security.md for the claims each test proves.

mod common;

use std::{fs, time::Duration};

use anyhow::{ensure, Result};
use common::{http_get, wait_until, Env, BAD_POLICY, POLICY, WORKLOADS};

/// Turns a good state file into a corrupt one.
type Corrupt<'a> = &'a dyn Fn(&str) -> String;

/// The `not ready` reasons of `/readyz` (empty when it answers 200).
fn readyz(e: &Env) -> Result<(u16, String)> {
    http_get(&e.node_ns, "/readyz")
}

#[test]
fn restart_with_an_invalid_policy_dir_keeps_the_last_good_policy() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let dir_files = [("workloads.yaml", WORKLOADS), ("policy.yaml", POLICY)];
    let mut e = Env::with_policy_dir("pdir-restart", &dir_files)?;
    wait_until(
        Duration::from_secs(10),
        "the directory's policy in force",
        || Ok(e.allowed()? && !e.reaches(9090)?),
    )?;
    e.denied_with_drop_evidence()?;
    ensure!(readyz(&e)?.0 == 200, "ready with a good directory");

    e.agent.kill()?;
    let broken = e.dir.join("policy.yaml");
    fs::write(&broken, BAD_POLICY)?;
    e.restart(&[])?;

    e.denied_with_drop_evidence()?;
    ensure!(e.allowed()?, "the allowed flow still answers");
    let (code, body) = readyz(&e)?;
    ensure!(
        code == 503,
        "not ready with a rejected directory: {code} {body}"
    );
    let at = format!("{}:9:", broken.display());
    ensure!(
        body.contains(&at) && body.contains("70000"),
        "readyz gives the reason: {body}"
    );
    let status = e.agent.status()?;
    ensure!(
        status.not_ready.iter().any(|r| r.contains(&at)),
        "status says why: {:?}",
        status.not_ready
    );
    let metrics = http_get(&e.node_ns, "/metrics")?.1;
    ensure!(
        metrics.contains("enforcer_policy_dir_valid 0"),
        "metric says the dir is invalid"
    );

    // Fixing the file installs it and the agent becomes ready.
    fs::write(&broken, POLICY.replace("port: 8080", "port: 9090"))?;
    wait_until(Duration::from_secs(10), "ready after the fix", || {
        Ok(readyz(&e)?.0 == 200)
    })?;
    ensure!(
        e.reaches(9090)? && !e.reaches(8080)?,
        "the fixed directory is in force"
    );
    Ok(())
}

#[test]
fn restart_with_an_invalid_policy_dir_and_no_last_good_copy_holds_the_pinned_policy() -> Result<()>
{
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let dir_files = [("workloads.yaml", WORKLOADS), ("policy.yaml", POLICY)];
    let mut e = Env::with_policy_dir("pdir-hold", &dir_files)?;
    wait_until(
        Duration::from_secs(10),
        "the directory's policy in force",
        || Ok(e.allowed()? && !e.reaches(9090)?),
    )?;
    e.agent.kill()?;
    // As if the state dir were lost too (a new node image, a wiped hostPath).
    fs::remove_dir_all(&e.agent.state_dir)?;
    fs::write(e.dir.join("policy.yaml"), BAD_POLICY)?;
    e.restart(&[])?;
    e.denied_with_drop_evidence()?;
    ensure!(e.allowed()?, "the allowed flow still answers");
    let (code, body) = readyz(&e)?;
    ensure!(
        code == 503 && body.contains("installs held"),
        "{code} {body}"
    );
    // A CLI apply would install the set without the directory's documents: refused.
    let err = e.agent.apply("extra.yaml", WORKLOADS).expect_err("held");
    ensure!(
        format!("{err:#}").contains("policy directory is invalid"),
        "{err:#}"
    );
    fs::write(e.dir.join("policy.yaml"), POLICY)?;
    wait_until(Duration::from_secs(10), "ready after the fix", || {
        Ok(readyz(&e)?.0 == 200)
    })?;
    e.denied_with_drop_evidence()?;
    Ok(())
}

#[test]
fn a_corrupt_state_file_is_quarantined_and_the_policy_stays() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    // What a crash or a bad disk may leave: garbage, an empty file, a file cut short whose
    // first documents still parse.
    let cut_short = |text: &str| text[..text.rfind("---").unwrap_or(0)].to_string();
    let cases: [(&str, Corrupt); 3] = [
        ("garbage", &|_| "spec: [unclosed\n\0\x01".into()),
        ("empty", &|_| String::new()),
        ("cut-short", &cut_short),
    ];
    for (case, corrupt) in cases {
        let mut e = Env::new(&format!("state-{case}"))?;
        e.agent.apply("policy.yaml", POLICY)?;
        e.denied_with_drop_evidence()?;
        e.agent.kill()?;
        let applied = e.agent.state_dir.join("applied.yaml");
        let good = fs::read_to_string(&applied)?;
        fs::write(&applied, corrupt(&good))?;
        e.restart(&[])?;
        let aside: Vec<_> = fs::read_dir(&e.agent.state_dir)?
            .filter_map(Result::ok)
            .map(|f| f.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("applied.yaml.corrupt-"))
            .collect();
        ensure!(aside.len() == 1, "{case}: quarantined once: {aside:?}");
        e.denied_with_drop_evidence()?;
        ensure!(e.allowed()?, "{case}: the allowed flow still answers");
        let (code, body) = readyz(&e)?;
        ensure!(
            code == 503 && body.contains("applied.yaml"),
            "{case}: {code} {body}"
        );
        let metrics = http_get(&e.node_ns, "/metrics")?.1;
        ensure!(
            metrics.contains("enforcer_state_quarantined_total 1"),
            "{case}: counted"
        );
        // Applying the documents again restores them.
        e.agent.apply("workloads.yaml", WORKLOADS)?;
        e.agent.apply("policy.yaml", POLICY)?;
        ensure!(readyz(&e)?.0 == 200, "{case}: ready after the apply");
        e.denied_with_drop_evidence()?;
    }
    Ok(())
}

#[test]
fn hostile_yaml_is_an_error_with_a_location() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let e = Env::enforcing("yaml")?;
    // (input, the exact error, checked by `policy check` and by an apply to the agent)
    let many_docs = "---\n".repeat(100_002);
    let cases = [
        (
            "[".repeat(100) + &"]".repeat(100),
            "1:65: nested deeper than 64 levels",
        ),
        // The parser's own limit on flow nesting comes first here.
        (
            "[".repeat(100_000),
            "1:256: invalid YAML: recursion limit exceeded",
        ),
        (
            "- ".repeat(300_000) + "x",
            "1:129: nested deeper than 64 levels",
        ),
        (
            (0..100).map(|i| " ".repeat(i) + "k:\n").collect(),
            "65:65: nested deeper than 64 levels",
        ),
        (many_docs, "100001:1: more than 100000 documents"),
        (
            "#".repeat(17 << 20),
            "1:1: input larger than 16777216 bytes",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let file = e.work.0.join(format!("hostile-{i}.yaml"));
        fs::write(&file, text)?;
        let want = format!("{}:{expected}", file.display());
        let out = e.cli(&["policy", "check", "-f", &file.display().to_string()])?;
        let msg = String::from_utf8_lossy(&out.stderr);
        ensure!(out.status.code() == Some(1), "check exits 1: {msg}");
        ensure!(msg.contains(&want), "check says {want:?}: {msg}");
        let err = e
            .agent
            .apply(&file.display().to_string(), text)
            .expect_err("rejected");
        ensure!(
            format!("{err:#}").contains(&want),
            "apply says {want:?}: {err:#}"
        );
    }
    e.denied_with_drop_evidence()?;
    ensure!(
        e.allowed()?,
        "the agent still runs and enforces the previous policy"
    );
    Ok(())
}

#[test]
fn metrics_listener_survives_slowloris_and_connection_floods() -> Result<()> {
    use std::{
        io::{Read, Write},
        net::TcpStream,
        time::Instant,
    };
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let e = Env::new("http")?;
    let connect = || -> Result<TcpStream> {
        enforcer_tests::run_in_netns(&e.node_ns, || {
            Ok(TcpStream::connect_timeout(
                &common::METRICS.parse()?,
                Duration::from_secs(2),
            )?)
        })
    };
    // A slowloris client: one byte of request head every 300 ms.
    let mut slow = connect()?;
    slow.write_all(b"GET /metrics HTTP/1.1\r\n")?;
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(3) {
        let _ = slow.write_all(b"X");
        let t = Instant::now();
        let (code, _) = http_get(&e.node_ns, "/metrics")?;
        worst = worst.max(t.elapsed());
        ensure!(code == 200, "a scrape during the slowloris");
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!("slowest scrape while a slowloris client trickles its head: {worst:?}");
    ensure!(
        worst < Duration::from_millis(500),
        "scrapes are not blocked: {worst:?}"
    );
    // The slow client is cut when its head has not arrived within the deadline (5 s).
    slow.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = [0u8; 512];
    let cut = Instant::now();
    let n = slow.read(&mut buf).unwrap_or(0);
    ensure!(
        !String::from_utf8_lossy(&buf[..n]).contains(" 200 "),
        "the slow client was not served"
    );
    ensure!(
        cut.elapsed() < Duration::from_secs(8),
        "the slow client was cut"
    );

    // 16 idle connections fill the listener; the 17th is closed at once. No wait is needed:
    // each connect returns once the kernel queued the connection, in order, and the agent's
    // single accept loop takes a slot for each in that order, so the 16 hold every slot before
    // the 17th is accepted.
    let idle: Vec<TcpStream> = (0..16).map(|_| connect()).collect::<Result<_>>()?;
    let mut extra = connect()?;
    extra.set_read_timeout(Some(Duration::from_secs(2)))?;
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\n\r\n");
    let n = extra.read(&mut buf).unwrap_or(0);
    ensure!(n == 0, "the connection over the cap is closed unanswered");
    // The idle ones are cut by the head deadline, then the listener serves again.
    let mut first = idle.into_iter().next().expect("16 connections");
    first.set_read_timeout(Some(Duration::from_secs(10)))?;
    let cut = Instant::now();
    ensure!(
        first.read(&mut buf).unwrap_or(1) == 0,
        "an idle connection is closed"
    );
    ensure!(
        cut.elapsed() < Duration::from_secs(8),
        "within the head deadline"
    );
    wait_until(Duration::from_secs(10), "served again", || {
        Ok(http_get(&e.node_ns, "/healthz")?.0 == 200)
    })?;
    Ok(())
}

/// The capability names in a `Cap*` line of /proc/PID/status.
fn caps_of(pid: u32, line: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .map(str::trim)
        .ok_or_else(|| anyhow::anyhow!("no {line} in /proc/{pid}/status"))?;
    Ok(u64::from_str_radix(hex, 16)?)
}

/// Set this process's soft limit of open files (children inherit it); returns the old one.
fn set_open_files_soft_limit(soft: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct we pass.
    unsafe {
        ensure!(libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) == 0);
        let old = lim.rlim_cur;
        lim.rlim_cur = soft.min(lim.rlim_max);
        ensure!(libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) == 0);
        Ok(old)
    }
}

/// `CAP_NET_ADMIN` (12) and `CAP_BPF` (39).
const KEPT_CAPS: u64 = (1 << 12) | (1 << 39);

#[test]
fn capabilities_are_dropped_and_new_interfaces_still_attach() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    // Start the agent with a low soft limit of open files, as container runtimes often do.
    let limit = set_open_files_soft_limit(1024)?;
    let e = Env::enforcing("caps");
    set_open_files_soft_limit(limit)?;
    let mut e = e?;
    let pid = e
        .agent
        .pid()
        .ok_or_else(|| anyhow::anyhow!("no agent pid"))?;
    for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
        let caps = caps_of(pid, set)?;
        ensure!(
            caps == KEPT_CAPS,
            "{set} {caps:#x}, expected {KEPT_CAPS:#x}"
        );
    }
    ensure!(caps_of(pid, "CapInh:")? == 0 && caps_of(pid, "CapAmb:")? == 0);
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    ensure!(status.contains("NoNewPrivs:\t1"), "no_new_privs is set");
    // The open files limit is raised to its hard limit (the soft one is often 1024).
    let limits = fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| l.split_whitespace().skip(3).take(2).collect())
        .unwrap_or_default();
    ensure!(
        files.len() == 2 && files[0] == files[1],
        "soft = hard: {files:?}"
    );
    // Every thread, not only the main one: capabilities are per thread, and the owner thread,
    // the tokio workers and the netlink watcher must all have started after the drop.
    let mut names = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let text = fs::read_to_string(task?.path().join("status"))?;
        let name = text.lines().next().unwrap_or_default().to_string();
        for set in ["CapEff", "CapPrm", "CapBnd"] {
            ensure!(
                text.contains(&format!("{set}:\t{KEPT_CAPS:016x}")),
                "thread {name} kept more in {set}: {text}"
            );
        }
        for set in ["CapInh", "CapAmb"] {
            ensure!(
                text.contains(&format!("{set}:\t{:016x}", 0)),
                "thread {name}: {set} not empty"
            );
        }
        names.push(name);
    }
    ensure!(
        names.iter().any(|n| n.contains("owner")) && names.len() >= 4,
        "the owner thread and the runtime's threads were checked: {names:?}"
    );
    // A pod that starts now is attached and enforced with the reduced privileges.
    e.topo.add_pod("web-1", "n1", &[ip("10.10.1.11")])?;
    e.agent.apply(
        "web-1.yaml",
        "apiVersion: enforcer/v1\nkind: Workload\nmetadata: {name: web-1}\nspec: {service: web, addresses: [10.10.1.11]}\n",
    )?;
    wait_until(
        Duration::from_secs(10),
        "web-1's interface attached",
        || {
            Ok(e.agent
                .status()?
                .interfaces
                .iter()
                .filter(|i| i.role == "pod")
                .count()
                == 3)
        },
    )?;
    let ns = e.topo.pod_netns("web-1")?.to_string();
    let opts = enforcer_tests::ProbeOptions::with_timeout(Duration::from_millis(700));
    let probe = |port: u16| -> Result<bool> {
        Ok(
            enforcer_tests::probe_tcp(&ns, format!("10.10.2.10:{port}").parse()?, &opts)?
                .is_answered(),
        )
    };
    wait_until(Duration::from_secs(5), "web-1 allowed on 8080", || {
        probe(8080)
    })?;
    ensure!(!probe(9090)?, "and denied on 9090");
    Ok(())
}

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().expect("address")
}

/// Our programs (`from_pod`, `to_pod`) attached with tcx to the pods' host-side interfaces, as
/// the kernel reports them (`BPF_PROG_QUERY`).
fn tcx_programs(e: &Env) -> Result<usize> {
    use aya::programs::{tc::TcAttachType, SchedClassifier};
    let ifaces: Vec<String> = e
        .topo
        .pods()
        .iter()
        .map(|p| p.host_ifname().to_string())
        .collect();
    enforcer_tests::run_in_netns(&e.node_ns, move || {
        let mut n = 0;
        for name in &ifaces {
            for at in [TcAttachType::Ingress, TcAttachType::Egress] {
                let Ok((_, progs)) = SchedClassifier::query_tcx(name, at) else {
                    continue; // the interface is gone
                };
                n += progs
                    .iter()
                    .filter(|p| matches!(p.name_as_str(), Some("from_pod" | "to_pod")))
                    .count();
            }
        }
        Ok(n)
    })
}

#[test]
fn stale_pins_are_swept_and_uninstall_leaves_nothing() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let mut e = Env::enforcing("pins")?;
    e.topo.add_pod("web-1", "n1", &[ip("10.10.1.11")])?;
    wait_until(Duration::from_secs(10), "web-1 attached", || {
        Ok(e.agent
            .status()?
            .interfaces
            .iter()
            .filter(|i| i.role == "pod")
            .count()
            == 3)
    })?;
    let links = e
        .agent
        .bpffs
        .join(format!("v{}", enforcer_common::LAYOUT_VERSION))
        .join("links");
    let maps = links.with_file_name("maps");
    // Pod links (the uplink has its XDP link besides).
    let count = |dir: &std::path::Path| -> Result<usize> {
        Ok(fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter(|f| f.file_name().to_string_lossy().ends_with("_pod"))
            .count())
    };
    ensure!(count(&links)? == 6, "two tcx links per pod");
    e.agent.kill()?;
    // While no agent runs: a pod goes away (its links stay pinned, holding our program), and
    // a crashed older run left a map this layout does not define.
    enforcer_tests::netns::delete_netns(e.topo.pod_netns("web-1")?)?;
    let stray = maps.join("OLD_FEATURE");
    enforcer_tests::run_checked(std::process::Command::new("bpftool").args([
        "map",
        "pin",
        "pinned",
        &maps.join("CONFIG").display().to_string(),
        &stray.display().to_string(),
    ]))?;
    ensure!(
        count(&links)? == 6 && stray.exists(),
        "the stale pins are there"
    );
    e.restart(&[])?;
    ensure!(count(&links)? == 4, "the vanished pod's links are swept");
    ensure!(!stray.exists(), "the stray map pin is swept");
    e.denied_with_drop_evidence()?;
    ensure!(tcx_programs(&e)? == 4, "our tcx programs on the two pods");

    e.agent.kill()?;
    let bin = enforcer_tests::cluster::enforcer_bin()?;
    let mut cmd = e
        .topo
        .node_command("n1", bin.to_str().unwrap_or("enforcer"))?;
    cmd.args(["uninstall", "--bpffs"]).arg(&e.agent.bpffs);
    enforcer_tests::run_checked(&mut cmd)?;
    ensure!(!e.agent.bpffs.exists(), "no pin file remains");
    ensure!(
        tcx_programs(&e)? == 0,
        "no tcx program of ours remains attached"
    );
    ensure!(e.reaches(9090)?, "nothing enforces any more");
    Ok(())
}

/// Issue 11: `/metrics` and `/readyz` answer from the published snapshot and the counter maps,
/// never waiting for the owner, so even the slowest request during a 10 000-rule install stays
/// under 50 ms.
#[test]
fn metrics_and_readyz_answer_during_a_large_install() -> Result<()> {
    use std::{
        sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        },
        time::Instant,
    };
    const BOUND: Duration = Duration::from_millis(50);
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let e = Env::new("http-install")?;
    let yaml = enforcer_tests::fixtures::ten_thousand_rules();
    let installing = Arc::new(AtomicBool::new(true));
    // One thread inside the node's namespace sends the requests (no thread per request).
    let addr: std::net::SocketAddr = common::METRICS.parse()?;
    let flag = installing.clone();
    let scraper = enforcer_tests::netns::spawn_in_netns(&e.node_ns, move || {
        let mut samples = Vec::new();
        while flag.load(Ordering::SeqCst) {
            for path in ["/metrics", "/readyz"] {
                let t = Instant::now();
                let (code, _) = enforcer_tests::get_here(addr, path)?;
                ensure!(code == 200 || path == "/readyz", "{path}: {code}");
                samples.push((path, t.elapsed(), flag.load(Ordering::SeqCst)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(samples)
    })?;
    let t = Instant::now();
    let result = e.agent.apply("generated.yaml", &yaml);
    let install_time = t.elapsed();
    installing.store(false, Ordering::SeqCst);
    result?;
    let samples = scraper
        .join()
        .map_err(|_| anyhow::anyhow!("scraper panicked"))??;
    eprintln!("10 000-rule install took {install_time:?}");
    for path in ["/metrics", "/readyz"] {
        let mut during: Vec<Duration> = samples
            .iter()
            .filter(|(p, _, i)| *p == path && *i)
            .map(|(_, d, _)| *d)
            .collect();
        during.sort();
        ensure!(
            during.len() >= 5,
            "{path}: requests were made during the install"
        );
        let at = |q: usize| during[(during.len() - 1) * q / 100];
        eprintln!(
            "{path}: {} requests during the install: median {:?}, p95 {:?}, worst {:?}",
            during.len(),
            at(50),
            at(95),
            at(100)
        );
        ensure!(at(100) < BOUND, "{path}: slowest answer {:?}", at(100));
    }
    let metrics = http_get(&e.node_ns, "/metrics")?.1;
    ensure!(
        metrics.contains("svc-999-ingress"),
        "the new rules are scraped after the install"
    );
    Ok(())
}

#[test]
fn a_policy_that_does_not_fit_is_refused_whole() -> Result<()> {
    use std::fmt::Write as _;
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let e = Env::enforcing("mapfull")?;
    let generation = e.agent.status()?.generation;
    // 16 385 distinct CIDR peers: one more class than CIDR_IDENTITIES holds per slot. The same
    // policy also opens 9090 to web, which must not take effect.
    let mut yaml = String::from(
        "apiVersion: enforcer/v1\nkind: FlowPolicy\nmetadata: {name: huge}\nspec:\n  service: api\n  ingress:\n    - from: [{service: web}]\n      ports: [{protocol: TCP, port: 9090}]\n    - from:\n",
    );
    for i in 0..16_385u32 {
        let _ = writeln!(
            yaml,
            "        - {{cidr: 100.{}.{}.{}/32}}",
            64 + (i >> 16),
            (i >> 8) & 255,
            i & 255
        );
    }
    let err = e.agent.apply("huge.yaml", &yaml).expect_err("refused");
    let msg = format!("{err:#}");
    ensure!(
        msg.contains("map CIDR_IDENTITIES would need") && msg.contains("nothing was applied"),
        "{msg}"
    );
    ensure!(
        e.agent.status()?.generation == generation,
        "no new generation"
    );
    e.denied_with_drop_evidence()?;
    ensure!(e.allowed()?, "the policy in force stays whole");
    let metrics = http_get(&e.node_ns, "/metrics")?.1;
    ensure!(
        metrics.contains("enforcer_bpf_map_full_total{map=\"CIDR_IDENTITIES\"} 1"),
        "counted"
    );
    Ok(())
}

#[test]
fn state_files_are_written_durably() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let e = Env::new("durable")?;
    let pid = e
        .agent
        .pid()
        .ok_or_else(|| anyhow::anyhow!("no agent pid"))?;
    let trace = e.work.0.join("strace.log");
    let mut strace = std::process::Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=openat,fsync,fdatasync,rename,renameat,renameat2,sendto",
        ])
        .arg("-o")
        .arg(&trace)
        .args(["-p", &pid.to_string()])
        .spawn()?;
    // Attached once the agent's resync (every second, it dumps links, addresses and routes over
    // rtnetlink: sendto) shows in the trace.
    wait_until(Duration::from_secs(10), "strace attached", || {
        Ok(fs::metadata(&trace).is_ok_and(|m| m.len() > 0))
    })?;
    e.agent.apply("policy.yaml", POLICY)?;
    strace.kill()?;
    strace.wait()?;
    let log = fs::read_to_string(&trace)?;
    let applied = e.agent.state_dir.join("applied.yaml");
    let tmp = format!("{}.tmp", applied.display());
    // The order of system calls for applied.yaml: open the temporary file, fsync it, rename it
    // over the file, open the directory and fsync it.
    let lines: Vec<&str> = log.lines().collect();
    let find = |from: usize, pred: &dyn Fn(&str) -> bool| {
        lines[from..].iter().position(|l| pred(l)).map(|i| from + i)
    };
    let open_tmp = find(0, &|l| {
        l.contains("openat(") && l.contains(&format!("\"{tmp}\""))
    })
    .ok_or_else(|| anyhow::anyhow!("no open of {tmp} in:\n{log}"))?;
    let fsync_tmp = find(open_tmp, &|l| l.contains("fsync("))
        .ok_or_else(|| anyhow::anyhow!("no fsync after the write:\n{log}"))?;
    let rename = find(fsync_tmp, &|l| l.contains("rename") && l.contains(&tmp))
        .ok_or_else(|| anyhow::anyhow!("no rename after the fsync:\n{log}"))?;
    let dir = e.agent.state_dir.display().to_string();
    let open_dir = find(rename, &|l| {
        l.contains("openat(") && l.contains(&format!("\"{dir}\""))
    })
    .ok_or_else(|| anyhow::anyhow!("no open of the directory after the rename:\n{log}"))?;
    find(open_dir, &|l| l.contains("fsync("))
        .ok_or_else(|| anyhow::anyhow!("no fsync of the directory:\n{log}"))?;
    let mode = |p: &std::path::Path| -> Result<u32> {
        use std::os::unix::fs::PermissionsExt;
        Ok(fs::metadata(p)?.permissions().mode() & 0o777)
    };
    ensure!(mode(&applied)? == 0o600, "applied.yaml is 0600");
    ensure!(mode(&e.agent.state_dir)? == 0o700, "the state dir is 0700");
    Ok(())
}

/// web-0 reaches api-0 on `port` no more, and the datapath counted the drop (api-0 serves
/// `port`, so the silence is the policy, not a dead server).
fn denied_with_drop(e: &Env, port: u16) -> Result<()> {
    let before = e.agent.packets("denied")?;
    ensure!(!e.reaches(port)?, "web → api:{port} got an answer");
    ensure!(
        e.agent.packets("denied")? > before,
        "no drop counted for web → api:{port}"
    );
    Ok(())
}

fn chmod(path: &std::path::Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    Ok(fs::set_permissions(path, fs::Permissions::from_mode(mode))?)
}

/// The agent refuses its policy directory (`/readyz` names `path` and `what`), and the policy in
/// force (web → api:9090 allowed, 8080 denied) stays.
fn refused(e: &Env, path: &str, what: &str) -> Result<()> {
    let names_it = |body: &str| {
        body.contains(&format!("{path}: {what}"))
            || body.contains(&format!("{path} (-> ")) && body.contains(what)
    };
    let waited = wait_until(
        Duration::from_secs(10),
        "readyz names the file and why",
        || {
            let (code, body) = readyz(e)?;
            Ok(code == 503 && names_it(&body))
        },
    );
    if let Err(err) = waited {
        anyhow::bail!("{err:#}: {:?}", readyz(e)?);
    }
    ensure!(e.reaches(9090)?, "the policy in force still allows 9090");
    denied_with_drop(e, 8080)
}

#[test]
fn policy_files_others_can_write_are_refused_and_a_configmap_mount_is_not() -> Result<()> {
    use std::os::unix::fs::{chown, symlink};
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let dir_files = [("workloads.yaml", WORKLOADS), ("policy.yaml", POLICY)];
    let mut e = Env::with_policy_dir("pdir-trust", &dir_files)?;
    wait_until(Duration::from_secs(10), "8080 allowed, 9090 denied", || {
        Ok(e.allowed()? && !e.reaches(9090)?)
    })?;
    // The directory becomes a ConfigMap mount as kubelet lays it out (files -> ..data/files,
    // ..data -> ..<timestamp>/), with a new policy: 9090 allowed, 8080 denied.
    let ts = e.dir.join("..2026_12_07_19_00_00.000000001");
    fs::create_dir(&ts)?;
    chmod(&ts, 0o755)?;
    let policy_9090 = POLICY.replace("port: 8080", "port: 9090");
    for (name, text) in [("workloads.yaml", WORKLOADS), ("policy.yaml", &policy_9090)] {
        fs::write(ts.join(name), text)?;
        chmod(&ts.join(name), 0o644)?;
    }
    symlink(ts.file_name().unwrap_or_default(), e.dir.join("..data"))?;
    for name in ["workloads.yaml", "policy.yaml"] {
        let tmp = e.dir.join(format!(".{name}.new"));
        symlink(format!("..data/{name}"), &tmp)?;
        fs::rename(&tmp, e.dir.join(name))?;
    }
    wait_until(Duration::from_secs(10), "the ConfigMap's policy", || {
        Ok(e.reaches(9090)? && !e.reaches(8080)?)
    })?;
    ensure!(readyz(&e)?.0 == 200, "ready with a ConfigMap mount");

    // Anyone may write the file now: what they write is refused, the policy in force stays.
    let file = ts.join("policy.yaml");
    chmod(&file, 0o666)?;
    fs::write(&file, POLICY)?;
    let named = e.dir.join("policy.yaml").display().to_string();
    refused(&e, &named, "mode 0666 lets group or others write it")?;
    // Owned by another user, mode 0644: refused as well, and across a restart.
    chmod(&file, 0o644)?;
    chown(&file, Some(65534), Some(65534))?;
    refused(&e, &named, "owned by uid 65534")?;
    e.restart(&[])?;
    refused(&e, &named, "owned by uid 65534")?;
    // A directory others can write (they could add files) is refused too.
    chown(&file, Some(0), Some(0))?;
    chmod(&e.dir, 0o775)?;
    let dir = e.dir.canonicalize()?.display().to_string();
    refused(&e, &dir, "mode 0775 lets group or others write it")?;
    // Fixed: the file's content now is the operator's, and it is installed.
    chmod(&e.dir, 0o755)?;
    wait_until(Duration::from_secs(10), "ready after the fix", || {
        Ok(readyz(&e)?.0 == 200)
    })?;
    ensure!(e.allowed()?, "the fixed directory's policy: 8080 allowed");
    e.denied_with_drop_evidence()?;
    Ok(())
}
