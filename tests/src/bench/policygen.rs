//! Generated policy sets of a given size: `rules` rules over `identities` services (one workload
//! each), written as the YAML contract and parsed like any policy file, plus the flows the
//! benchmarks judge against them and the equivalent iptables/nftables rules.
//!
//! Shape: service `svc-0` ("web", the client) may reach `svc-1` ("api", the server) on TCP 8080,
//! TCP 5201 and UDP 5201 (one egress rule on web, one ingress rule on api); `svc-2` ("other") is
//! a service web has no rule for. Every other rule `g` belongs to service `s = 2 + g mod (S-2)`,
//! is an ingress rule when `s` is even and an egress rule when odd, names peer
//! `s + 1 + g div (S-2)` and one TCP port, so that every rule yields its own
//! (subject, peer) decision table in the datapath: the `POLICY` trie grows with the rule count.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use anyhow::{anyhow, Result};
use enforcer::policy::{parse::parse_documents, NodeContext, PolicySet};

/// Addresses of the three services the benchmark flows use.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints {
    pub web: [IpAddr; 2],
    pub api: [IpAddr; 2],
    pub other: [IpAddr; 2],
}

impl Default for Endpoints {
    fn default() -> Self {
        let a = |s: &str| s.parse::<IpAddr>().expect("literal address");
        Endpoints {
            web: [a("10.10.1.10"), a("fd00:10::10")],
            api: [a("10.10.2.10"), a("fd00:10::20")],
            other: [a("10.10.3.10"), a("fd00:10::30")],
        }
    }
}

/// The ports web may use towards api.
pub const ALLOWED_TCP: [u16; 2] = [8080, 5201];
pub const ALLOWED_UDP: u16 = 5201;

/// One generated allow rule, flattened to the 5-tuple filter other firewalls need.
#[derive(Debug, Clone, Copy)]
pub struct FlatRule {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// 6 = TCP, 17 = UDP.
    pub protocol: u8,
    pub port: u16,
}

/// A generated policy set.
pub struct Generated {
    pub set: PolicySet,
    pub rules: usize,
    pub identities: usize,
    pub yaml_bytes: usize,
    /// The policy file itself (what an agent would be given).
    pub yaml: String,
    pub parse_time: Duration,
    /// Every rule as a 5-tuple filter; the web → api rules come last.
    pub flat: Vec<FlatRule>,
}

fn service_addr(s: usize, ep: &Endpoints) -> IpAddr {
    match s {
        0 => ep.web[0],
        1 => ep.api[0],
        2 => ep.other[0],
        _ => {
            let base = u32::from(Ipv4Addr::new(10, 128, 0, 0));
            IpAddr::V4(Ipv4Addr::from(
                base + u32::try_from(s).expect("fewer than 2^23 services"),
            ))
        }
    }
}

/// Generate `rules` rules (at least 3) over `identities` services (at least 4).
#[expect(clippy::too_many_lines, reason = "one generator, read top to bottom")]
pub fn generate(rules: usize, identities: usize, ep: &Endpoints) -> Result<Generated> {
    let services = identities.max(4);
    let rules = rules.max(3);
    // Rules per service: (section is_ingress, peer, port).
    let mut per_service: Vec<Vec<(bool, usize, u16)>> = vec![Vec::new(); services];
    let generic = rules - 2;
    let mut flat = Vec::with_capacity(rules + 4);
    for g in 0..generic {
        let s = 2 + g % (services - 2);
        let j = g / (services - 2);
        let mut peer = (s + 1 + j) % services;
        if peer == s {
            peer = (peer + 1) % services;
        }
        let ingress = s.is_multiple_of(2);
        let port = 1024 + u16::try_from(j % 60_000).expect("below 60000");
        per_service[s].push((ingress, peer, port));
        let (src, dst) = if ingress { (peer, s) } else { (s, peer) };
        flat.push(FlatRule {
            src: service_addr(src, ep),
            dst: service_addr(dst, ep),
            protocol: 6,
            port,
        });
    }
    for port in ALLOWED_TCP {
        flat.push(FlatRule {
            src: ep.web[0],
            dst: ep.api[0],
            protocol: 6,
            port,
        });
    }
    flat.push(FlatRule {
        src: ep.web[0],
        dst: ep.api[0],
        protocol: 17,
        port: ALLOWED_UDP,
    });

    let mut y = String::with_capacity(rules * 160 + services * 150);
    let web_api_ports = format!(
        "[{{protocol: TCP, port: {}}}, {{protocol: TCP, port: {}}}, {{protocol: UDP, port: {ALLOWED_UDP}}}]",
        ALLOWED_TCP[0], ALLOWED_TCP[1]
    );
    for (s, generic_rules) in per_service.iter().enumerate() {
        let mut addrs = vec![service_addr(s, ep).to_string()];
        match s {
            0 => addrs.push(format!("\"{}\"", ep.web[1])),
            1 => addrs.push(format!("\"{}\"", ep.api[1])),
            2 => addrs.push(format!("\"{}\"", ep.other[1])),
            _ => {}
        }
        let _ = write!(
            y,
            "---\napiVersion: enforcer/v1\nkind: Workload\nmetadata: {{name: w-{s}}}\nspec: {{service: svc-{s}, addresses: [{}]}}\n",
            addrs.join(", ")
        );
        let mut ingress = Vec::new();
        let mut egress = Vec::new();
        if s == 0 {
            egress.push(format!(
                "{{to: [{{service: svc-1}}], ports: {web_api_ports}}}"
            ));
        }
        if s == 1 {
            ingress.push(format!(
                "{{from: [{{service: svc-0}}], ports: {web_api_ports}}}"
            ));
        }
        for (is_ingress, peer, port) in generic_rules {
            if *is_ingress {
                ingress.push(format!(
                    "{{from: [{{service: svc-{peer}}}], ports: [{{protocol: TCP, port: {port}}}]}}"
                ));
            } else {
                egress.push(format!(
                    "{{to: [{{service: svc-{peer}}}], ports: [{{protocol: TCP, port: {port}}}]}}"
                ));
            }
        }
        if ingress.is_empty() && egress.is_empty() {
            continue;
        }
        let _ = write!(
            y,
            "---\napiVersion: enforcer/v1\nkind: FlowPolicy\nmetadata: {{name: pol-{s}}}\nspec:\n  service: svc-{s}\n"
        );
        if !ingress.is_empty() {
            let _ = writeln!(y, "  ingress: [{}]", ingress.join(", "));
        }
        if !egress.is_empty() {
            let _ = writeln!(y, "  egress: [{}]", egress.join(", "));
        }
    }
    let start = Instant::now();
    let docs = parse_documents("bench.yaml", &y).map_err(|e| anyhow!("generated policy: {e}"))?;
    let set = PolicySet::from_documents(docs).map_err(|e| anyhow!("generated policy: {e}"))?;
    let parse_time = start.elapsed();
    Ok(Generated {
        set,
        rules,
        identities: services,
        yaml_bytes: y.len(),
        yaml: y,
        parse_time,
        flat,
    })
}

/// The `FlowPolicy` of api (`svc-1`) alone, optionally with one more allowed TCP port: the
/// document a one-rule change applies.
pub fn api_policy_yaml(extra_tcp_port: Option<u16>) -> String {
    let extra =
        extra_tcp_port.map_or_else(String::new, |p| format!(", {{protocol: TCP, port: {p}}}"));
    format!(
        "apiVersion: enforcer/v1\nkind: FlowPolicy\nmetadata: {{name: pol-1}}\nspec:\n  service: svc-1\n  ingress: [{{from: [{{service: svc-0}}], ports: [{{protocol: TCP, port: {}}}, {{protocol: TCP, port: {}}}, {{protocol: UDP, port: {ALLOWED_UDP}}}{extra}]}}]\n",
        ALLOWED_TCP[0], ALLOWED_TCP[1]
    )
}

/// Node context of the `BPF_PROG_TEST_RUN` benchmarks: no host addresses, every flow endpoint
/// local.
pub fn test_context(ep: &Endpoints) -> NodeContext {
    NodeContext {
        host_addresses: std::collections::BTreeSet::default(),
        local_addresses: ep
            .web
            .iter()
            .chain(&ep.api)
            .chain(&ep.other)
            .copied()
            .collect(),
    }
}
