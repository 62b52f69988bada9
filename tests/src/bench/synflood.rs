//! `synflood`: a denied SYN flood against a pod while an allowed TCP flow to it runs (issue 15),
//! with the enforcer and with an nftables drop rule holding the same policy (10 rules).
//!
//! Three pods on one node (`throughput`'s setup): the client runs iperf3 TCP to the server (an
//! allowed flow); the attacker, whose flows to the server no rule allows, sends TCP SYNs to the
//! server's iperf3 port from a fresh source port each, as fast as one thread can: an `AF_PACKET`
//! socket on its `eth0`, `sendmmsg` batches of prebuilt frames (correct MACs and checksums, so the
//! node's stack forwards them as it would real ones). For each filter and round: the allowed
//! flow alone, the flood alone (drops and CPU), then both at once.
//!
//! CPU: `/proc/stat` softirq time of all CPUs over the flood-only window (the veth receive path,
//! the forwarding and both filters run in softirq). Drops: the filter's own count (the
//! enforcer's denied counters; the packets of the nftables rule `counter drop`), which must
//! account for what the generator sent.

use std::{
    fmt::Write as _,
    fs,
    net::IpAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use enforcer::policy::compile;
use enforcer_common::{DIR_EGRESS, REASON_ESTABLISHED, VERDICT_ALLOW, VERDICT_DENY};
use enforcer_tests::netns::spawn_in_netns;

use super::{
    policygen::generate,
    stats::{summarize, Summary},
    throughput::{
        apply, iperf, nft_ruleset, remove, run_in, Active, Filter, Policies, Server, Setup, PORT,
    },
    Config, Goal, Section,
};

/// Rules of the policy both filters hold.
const RULES: usize = 10;
/// Frames per `sendmmsg`.
const BATCH: usize = 64;
/// Distinct source ports the generator cycles through (a fresh flow per SYN, as a flood sends).
const PORTS: u16 = 32_768;

/// `ip -j link show DEV` in `ns`: its MAC address.
fn mac_of(ns: &str, dev: &str) -> Result<[u8; 6]> {
    let out = run_in(
        ns,
        "ip",
        &["-j", "link", "show", dev],
        None,
        Duration::from_secs(10),
    )?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -j link")?;
    let text = v[0]["address"]
        .as_str()
        .ok_or_else(|| anyhow!("no address of {dev} in {ns}"))?;
    let mut mac = [0u8; 6];
    for (i, part) in text.split(':').enumerate() {
        let byte = mac.get_mut(i).ok_or_else(|| anyhow!("bad MAC {text}"))?;
        *byte = u8::from_str_radix(part, 16).with_context(|| format!("bad MAC {text}"))?;
    }
    Ok(mac)
}

/// The ones' complement sum of `data` folded to 16 bits.
fn checksum(data: &[u8], start: u32) -> u16 {
    let mut sum = start;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(u16::MAX)
}

/// An Ethernet + IPv4 + TCP SYN frame with valid checksums.
fn syn_frame(macs: ([u8; 6], [u8; 6]), src: [u8; 4], dst: [u8; 4], sport: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(54);
    f.extend_from_slice(&macs.1); // destination: the node's end of the veth
    f.extend_from_slice(&macs.0);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [
        0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = checksum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&PORT.to_be_bytes());
    tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    let partial = !checksum(&pseudo, 0);
    let c = checksum(&tcp, u32::from(partial));
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&tcp);
    f
}

/// An `AF_PACKET` socket bound to `dev` of the calling thread's namespace.
fn packet_socket(dev: &str) -> Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked before it is owned.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(dev)?;
    // SAFETY: a valid NUL-terminated string, only read.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        bail!("no interface {dev}");
    }
    // SAFETY: all-zero is a valid `sockaddr_ll`.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = u16::try_from(libc::AF_PACKET).unwrap_or_default();
    sll.sll_ifindex = i32::try_from(index)?;
    let len = u32::try_from(std::mem::size_of::<libc::sockaddr_ll>())?;
    // SAFETY: `sll` is a valid `sockaddr_ll` of `len` bytes for the call's duration.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), (&raw const sll).cast(), len) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("bind AF_PACKET");
    }
    Ok(fd)
}

/// Send SYNs from the attacker until `stop`; the frames sent.
fn flood(frames: &[Vec<u8>], stop: &AtomicBool) -> Result<u64> {
    let fd = packet_socket(enforcer_tests::POD_IFNAME)?;
    let mut sent = 0u64;
    let mut next = 0usize;
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(BATCH);
    // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths).
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    while !stop.load(Ordering::Relaxed) {
        iov.clear();
        for _ in 0..BATCH {
            let f = &frames[next % frames.len()];
            next += 1;
            iov.push(libc::iovec {
                iov_base: f.as_ptr().cast_mut().cast(),
                iov_len: f.len(),
            });
        }
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = std::ptr::from_mut(v);
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs` holds BATCH headers, each pointing at one iovec of a live frame; the
        // kernel only reads them.
        let n =
            unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), u32::try_from(BATCH)?, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOBUFS) {
                continue;
            }
            return Err(e).context("sendmmsg");
        }
        sent += u64::try_from(n)?;
    }
    Ok(sent)
}

/// Softirq time of all CPUs so far (`/proc/stat`, `USER_HZ` ticks → seconds).
fn softirq_seconds() -> Result<f64> {
    let stat = fs::read_to_string("/proc/stat")?;
    let cpu = stat
        .lines()
        .next()
        .ok_or_else(|| anyhow!("empty /proc/stat"))?;
    // cpu user nice system idle iowait irq softirq ...
    let ticks: f64 = cpu
        .split_whitespace()
        .nth(7)
        .ok_or_else(|| anyhow!("no softirq column in /proc/stat"))?
        .parse()?;
    // SAFETY: plain syscall.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(ticks / hz as f64)
}

/// The packets the active filter dropped so far.
fn dropped(s: &Setup, active: &Active) -> Result<u64> {
    match active {
        Active::Enforcer(dp) => Ok(dp
            .counters()?
            .iter()
            .filter(|((_, v, _), _)| *v == VERDICT_DENY)
            .map(|(_, n)| n)
            .sum()),
        Active::Nftables => {
            let out = run_in(
                &s.node_ns,
                "nft",
                &["list", "chain", "ip", "bench", "forward"],
                None,
                Duration::from_secs(10),
            )?;
            let n = out
                .lines()
                .find(|l| l.contains("counter") && l.contains("drop"))
                .and_then(|l| l.split_whitespace().skip_while(|w| *w != "packets").nth(1))
                .ok_or_else(|| anyhow!("no drop counter in the nftables chain"))?;
            Ok(n.parse()?)
        }
        _ => bail!("not a filter of synflood"),
    }
}

/// Packets the enforcer's `from_pod` allowed as new flows (not established) so far; 0 for
/// nftables.
fn egress_new_allowed(active: &Active) -> Result<u64> {
    match active {
        Active::Enforcer(dp) => Ok(dp
            .counters()?
            .iter()
            .filter(|((d, v, r), _)| {
                *d == DIR_EGRESS && *v == VERDICT_ALLOW && *r != REASON_ESTABLISHED
            })
            .map(|(_, n)| n)
            .sum()),
        _ => Ok(0),
    }
}

/// One window of the flood, with or without the allowed flow: frames sent, dropped, softirq
/// seconds, wall seconds, and the allowed flow's bits/s if it ran.
struct Window {
    sent: u64,
    dropped: u64,
    /// New flows `from_pod` allowed meanwhile (the enforcer).
    egress_new: u64,
    softirq_s: f64,
    wall_s: f64,
    tcp: Option<f64>,
}

fn window(
    s: &Setup,
    active: &Active,
    frames: &Arc<Vec<Vec<u8>>>,
    seconds: u32,
    with_flow: bool,
) -> Result<Window> {
    let stop = Arc::new(AtomicBool::new(false));
    let (d0, c0, t0) = (dropped(s, active)?, softirq_seconds()?, Instant::now());
    let e0 = egress_new_allowed(active)?;
    let (f, st) = (frames.clone(), stop.clone());
    let sender = spawn_in_netns(&s.attacker_ns, move || flood(&f, &st))?;
    let tcp = if with_flow {
        Some(iperf(s, false, seconds)?)
    } else {
        thread::sleep(Duration::from_secs(u64::from(seconds)));
        None
    };
    stop.store(true, Ordering::Relaxed);
    let sent = sender
        .join()
        .map_err(|_| anyhow!("the flood thread panicked"))??;
    let (wall_s, softirq_s) = (t0.elapsed().as_secs_f64(), softirq_seconds()? - c0);
    // Let the last frames through the stack before counting.
    thread::sleep(Duration::from_millis(200));
    Ok(Window {
        sent,
        dropped: dropped(s, active)? - d0,
        egress_new: egress_new_allowed(active)? - e0,
        softirq_s,
        wall_s,
        tcp,
    })
}

/// Per filter: allowed-flow ratio (flood ÷ alone), drops per second, drops per softirq second.
#[derive(Default)]
struct Figures {
    ratio: Vec<f64>,
    drop_pps: Vec<f64>,
    per_cpu_s: Vec<f64>,
    sent_pps: Vec<f64>,
    /// New flows `from_pod` allowed per flood SYN (flood alone).
    egress_new_per_syn: Vec<f64>,
}

fn measure(
    s: &Setup,
    p: &Policies,
    f: Filter,
    frames: &Arc<Vec<Vec<u8>>>,
    seconds: u32,
    out: &mut Figures,
) -> Result<()> {
    let active = match f {
        Filter::Nftables { rules } => {
            run_in(
                &s.node_ns,
                "nft",
                &["-f", "-"],
                Some(&nft_ruleset(&p.by_size[&rules].1, "counter drop")),
                Duration::from_secs(30),
            )?;
            Active::Nftables
        }
        _ => apply(s, p, f)?,
    };
    let result = (|| -> Result<()> {
        let alone = iperf(s, false, seconds)?;
        let flood = window(s, &active, frames, seconds, false)?;
        let both = window(s, &active, frames, seconds, true)?;
        // Every frame sent must have been dropped by the filter (a dead path would drop them
        // elsewhere, uncounted): within 1 % (frames still queued when the count was read).
        for w in [&flood, &both] {
            if (w.dropped as f64) < 0.99 * w.sent as f64 {
                bail!(
                    "{}: sent {} SYNs, the filter dropped {}: not the path meant",
                    f.name(),
                    w.sent,
                    w.dropped
                );
            }
        }
        let tcp = both.tcp.unwrap_or(f64::NAN);
        eprintln!(
            "  {:<22} alone {:.2} Gbit/s, under flood {:.2} Gbit/s ({:.2}×); flood alone: sent {:.0} kpps, dropped {:.0} kpps, softirq {:.2} CPU-s → {:.0} k drops per CPU-s",
            f.name(),
            alone / 1e9,
            tcp / 1e9,
            tcp / alone,
            flood.sent as f64 / flood.wall_s / 1e3,
            flood.dropped as f64 / flood.wall_s / 1e3,
            flood.softirq_s,
            flood.dropped as f64 / flood.softirq_s / 1e3
        );
        out.ratio.push(tcp / alone);
        out.drop_pps.push(both.dropped as f64 / both.wall_s);
        out.sent_pps.push(flood.sent as f64 / flood.wall_s);
        out.per_cpu_s.push(flood.dropped as f64 / flood.softirq_s);
        out.egress_new_per_syn
            .push(flood.egress_new as f64 / flood.sent as f64);
        Ok(())
    })();
    remove(s, active)?;
    result
}

pub fn run(cfg: &Config) -> Result<Section> {
    let s = Setup::new()?;
    let g = generate(RULES, RULES, &s.ep)?;
    let mut policies = Policies {
        by_size: std::collections::BTreeMap::new(),
    };
    policies
        .by_size
        .insert(RULES, (Arc::new(compile(&g.set, &s.ctx)), g.flat));
    let macs = (
        mac_of(&s.attacker_ns, enforcer_tests::POD_IFNAME)?,
        mac_of(&s.node_ns, &s.attacker_if)?,
    );
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (s.ep.other[0], s.server_addr) else {
        bail!("the attacker and the server need IPv4 addresses");
    };
    let frames: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..PORTS)
            .map(|i| syn_frame(macs, src.octets(), dst.octets(), 32_768 + i))
            .collect(),
    );
    let _server = Server::start(&s.server_ns)?;
    let filters = [
        Filter::Enforcer {
            rules: RULES,
            xdp: false,
        },
        Filter::Nftables { rules: RULES },
    ];
    let rounds = if cfg.quick { 1 } else { 3 };
    eprintln!(
        "synflood: {} filters × {rounds} rounds, {} s per window",
        filters.len(),
        cfg.seconds
    );
    let mut figures: Vec<Figures> = filters.iter().map(|_| Figures::default()).collect();
    for round in 0..rounds {
        for i in 0..filters.len() {
            // Alternate which filter goes first from round to round.
            let i = if round % 2 == 0 {
                i
            } else {
                filters.len() - 1 - i
            };
            measure(
                &s,
                &policies,
                filters[i],
                &frames,
                cfg.seconds,
                &mut figures[i],
            )?;
        }
    }
    Ok(section(&filters, &figures, rounds, cfg.seconds))
}

fn section(filters: &[Filter], figures: &[Figures], rounds: usize, seconds: u32) -> Section {
    let sum = |v: &[f64]| summarize(v);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Three pods on one node: a client, a server and an attacker. The allowed flow: iperf3 TCP client → server \
         ({seconds} s). The flood: TCP SYNs from the attacker to the server's iperf3 port, a fresh source port each \
         (32 768 flows, cycled), from one thread as fast as it can (`AF_PACKET` + `sendmmsg` of 64 prebuilt frames \
         with valid checksums on the attacker's `eth0`; `tests/src/bench/synflood.rs`). No rule allows \
         attacker → server: the enforcer (its programs on all three pod interfaces, policy of {RULES} rules) drops \
         them in the server's `to_pod`; nftables (the same rules as one set in the node's forward chain, then \
         `counter drop`) in the forward hook. Per filter and round: the allowed flow alone, the flood alone \
         ({seconds} s), then both at once. Drops are the filter's own count (denied counters; the nftables rule's \
         counter), checked to account for at least 99 % of what the generator sent. **CPU is the softirq time of all \
         CPUs in `/proc/stat`** over the flood-alone window (the veth receive path, forwarding and both filters run \
         in softirq; the sender's own system time is not in it). {rounds} rounds, the order of the filters \
         alternating; median (min–max).\n"
    );
    let _ = writeln!(
        md,
        "| filter | allowed flow under flood ÷ alone | dropped under flood (kpps) | sent, flood alone (kpps) | drops per softirq CPU-second (k) |\n|---|---|---|---|---|"
    );
    for (f, fig) in filters.iter().zip(figures) {
        let k = |v: &[f64]| {
            let s = sum(v);
            format!(
                "{:.0} ({:.0}–{:.0})",
                s.median / 1e3,
                s.min / 1e3,
                s.max / 1e3
            )
        };
        let _ = writeln!(
            md,
            "| {} | **{}** | {} | {} | **{}** |",
            f.name(),
            sum(&fig.ratio).ratio(),
            k(&fig.drop_pps),
            k(&fig.sent_pps),
            k(&fig.per_cpu_s)
        );
    }
    let mut goals = Vec::new();
    let enforcer: (Summary, Summary) = (sum(&figures[0].ratio), sum(&figures[0].per_cpu_s));
    let nft: (Summary, Summary) = (sum(&figures[1].ratio), sum(&figures[1].per_cpu_s));
    goals.push(Goal {
        name: "denied SYN flood: the allowed flow keeps ≥ 0.9× of its throughput (enforcer)".into(),
        measured: format!(
            "enforcer {}, nftables {} (TCP under flood ÷ alone)",
            enforcer.0.ratio(),
            nft.0.ratio()
        ),
        met: enforcer.0.median >= 0.9,
        limit: if enforcer.0.median >= 0.9 {
            String::new()
        } else {
            "the flood's sender, its softirq work and iperf3's two ends share this machine's 2 CPUs: \
             nftables' figure beside it shows how much of the loss any filter sees"
                .into()
        },
    });
    goals.push(Goal {
        name: "denied SYN flood: enforcer drops per softirq CPU-second ≥ nftables'".into(),
        measured: format!(
            "enforcer {:.0} k, nftables {:.0} k",
            enforcer.1.median / 1e3,
            nft.1.median / 1e3
        ),
        met: enforcer.1.median >= nft.1.median,
        limit: if enforcer.1.median >= nft.1.median {
            String::new()
        } else {
            format!(
                "the enforcer drops in the server's `to_pod`, after the node forwarded each SYN, where nftables drops \
                 in the forward hook; before that, `from_pod` on the attacker's interface passed every SYN (the \
                 attacker's egress is not isolated): {:.2} new flows per flood SYN were judged and tracked in \
                 `CONNTRACK` (its counters), the others, repeats of the 32 768 cycled flows, passed as established",
                sum(&figures[0].egress_new_per_syn).median
            )
        },
    });
    Section {
        name: "synflood",
        title: "Denied SYN flood (`synflood`)".into(),
        markdown: md,
        goals,
        data: Vec::new(),
    }
}
