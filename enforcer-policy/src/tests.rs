//! Tests of the policy engine as a whole (docs/design.md, "Policy semantics", rules 1–8):
//!
//! - truth tables of every semantic rule, each case judged by `explain` (the reference semantics)
//!   and by the compiled map entries through [`Simulator`] (the datapath's lookups);
//! - a property test (proptest, shrinking a failure to a minimal set): for thousands of random
//!   policy sets and flows, the compiled entries decide exactly what `explain` decides, and name
//!   the same policy and rule;
//! - a scale test: 10 000 rules compile, and the result still agrees with `explain`.
//!
//! Parser rejections are tested in `parse.rs`.

use std::{
    cell::Cell,
    collections::{BTreeSet, HashMap},
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use enforcer_common::{
    identity, PolicyKey, PolicyValue, IDF_HOST, POLICY_KEY_FIXED_BITS, REASON_POLICY, VERDICT_DENY,
};
use ipnet::IpNet;
use proptest::{
    prelude::{any, ProptestConfig, Strategy},
    strategy::ValueTree,
    test_runner::{RngSeed, TestCaseError, TestRunner},
};

use super::{
    compile,
    compile::{PolicyEntry, RuleInfo},
    explain,
    parse::parse_documents,
    rule::RuleRef,
    simulate::Simulator,
    Compiled, Direction, Document, Explanation, Flow, FlowPolicy, Labels, Mode, NodeContext, Peer,
    PolicySet, PortSpec, Protocol, RateLimit, RateScope, Rule, Source, Verdict, Workload,
    ANY_SERVICE,
};

// ---------------------------------------------------------------------------------------------
// The compiled entries, looked up with attribution
// ---------------------------------------------------------------------------------------------

/// The datapath's decision over compiled entries, with the deciding rule. `Simulator` gives the
/// verdict; this also recovers the rule id the datapath would count and report, so that the
/// attribution can be compared with `explain`'s.
struct Datapath<'a> {
    compiled: &'a Compiled,
    sim: Simulator<'a>,
    tables: HashMap<(u8, u32, u32), Vec<&'a PolicyEntry>>,
}

impl<'a> Datapath<'a> {
    fn new(compiled: &'a Compiled) -> Self {
        let mut tables: HashMap<(u8, u32, u32), Vec<&PolicyEntry>> = HashMap::new();
        for e in &compiled.policy {
            let k = PolicyKey::decode(&e.key);
            tables
                .entry((k.direction, k.subject, k.peer))
                .or_default()
                .push(e);
        }
        Datapath {
            compiled,
            sim: Simulator::new(compiled),
            tables,
        }
    }

    /// Longest-prefix match in the table of (direction, subject, peer).
    fn lookup(&self, key: (u8, u32, u32), proto: u8, port: u16) -> Option<PolicyValue> {
        let point = (u32::from(proto) << 16) | u32::from(port);
        self.tables
            .get(&key)?
            .iter()
            .filter(|e| PolicyKey::decode(&e.key).covers(e.prefix_len, point))
            .max_by_key(|e| e.prefix_len)
            .map(|e| e.value)
    }

    /// The entry deciding one side of a new flow (`None`: nothing found, or host → workload).
    fn value(&self, dir: Direction, flow: &Flow) -> Option<PolicyValue> {
        let src = self.sim.identity(flow.src);
        let dst = self.sim.identity(flow.dst);
        if dir == Direction::Ingress && src.flags & IDF_HOST != 0 {
            return None;
        }
        let (subject, peer) = match dir {
            Direction::Ingress => (dst.id, src.id),
            Direction::Egress => (src.id, dst.id),
        };
        let code = dir.code();
        self.lookup((code, subject, peer), flow.protocol, flow.port)
            .or_else(|| self.lookup((code, subject, identity::ANY), flow.protocol, flow.port))
    }

    /// The verdict and the deciding rule, chosen the way `explain` chooses: for a drop or an
    /// audit the source's side first, for an allow the destination's side first.
    fn decide(&self, flow: &Flow) -> (Verdict, Option<&RuleInfo>) {
        let egress = self.value(Direction::Egress, flow);
        let ingress = self.value(Direction::Ingress, flow);
        let sides = [egress, ingress];
        if let Some(v) = sides.iter().flatten().find(|v| v.verdict == VERDICT_DENY) {
            return (Verdict::Deny, self.compiled.rule(v.rule));
        }
        if let Some(v) = sides
            .iter()
            .flatten()
            .find(|v| v.audit_verdict == VERDICT_DENY)
        {
            return (Verdict::Audit, self.compiled.rule(v.audit_rule));
        }
        let by_rule = [ingress, egress]
            .into_iter()
            .flatten()
            .find(|v| v.reason == REASON_POLICY);
        (
            Verdict::Allow,
            by_rule.and_then(|v| self.compiled.rule(v.rule)),
        )
    }
}

/// Checks the shape of the policy entries the datapath's LPM trie needs: prefixes within the
/// protocol and port bits, no bits set beyond the prefix, and no key written twice.
fn check_entries(compiled: &Compiled) -> Result<(), String> {
    let mut keys = BTreeSet::new();
    for e in &compiled.policy {
        let bits = e.prefix_len.checked_sub(POLICY_KEY_FIXED_BITS);
        let Some(bits @ 0..=24) = bits else {
            return Err(format!(
                "prefix length {} out of range: {e:?}",
                e.prefix_len
            ));
        };
        let k = PolicyKey::decode(&e.key);
        if bits < 24 && k.point() & ((1 << (24 - bits)) - 1) != 0 {
            return Err(format!("bits set beyond the prefix: {e:?}"));
        }
        if k.encode() != e.key {
            return Err(format!("padding set: {e:?}"));
        }
        if !keys.insert((e.prefix_len, e.key)) {
            return Err(format!("key written twice: {e:?}"));
        }
    }
    Ok(())
}

/// Checks that the compiled entries decide `flow` as `expected` (from `explain`) says, with the
/// same attribution. Returns a description of the first difference.
fn compare(dp: &Datapath, flow: &Flow, expected: &Explanation) -> Result<(), String> {
    let sim = dp.sim.verdict(flow);
    if sim != expected.verdict {
        return Err(format!(
            "Simulator says {sim}, explain says {}",
            expected.verdict
        ));
    }
    let (verdict, rule) = dp.decide(flow);
    if verdict != sim {
        return Err(format!("the test's lookup says {verdict}, Simulator {sim}"));
    }
    let compiled = match rule.map(|r| &r.rule) {
        Some(RuleRef::DefaultDeny { subject, direction }) => {
            // A default deny: explain names no rule, its reason names the service and direction.
            let want = format!(
                "default deny of isolated service {subject} ({})",
                direction.as_str()
            );
            if !expected.reason.ends_with(&want) {
                return Err(format!(
                    "compiled default deny of {subject:?} ({direction:?}), explain's reason is {:?}",
                    expected.reason
                ));
            }
            None
        }
        Some(r) => Some(r),
        None => None,
    };
    if compiled != expected.rule.as_ref() {
        return Err(format!(
            "compiled attribution {compiled:?}, explain {:?}",
            expected.rule
        ));
    }
    Ok(())
}

/// The policy set, context and flow as text, to reproduce a failure.
fn describe(set: &PolicySet, ctx: &NodeContext, flow: &Flow, e: &Explanation) -> String {
    let yaml = Document::to_yaml_stream(&set.documents()).unwrap_or_else(|e| e.to_string());
    format!(
        "--- policy set:\n{yaml}--- host addresses: {:?}\n--- flow: {} -> {} protocol {} port {}\n\
         --- explain: {e:?}",
        ctx.host_addresses, flow.src, flow.dst, flow.protocol, flow.port
    )
}

// ---------------------------------------------------------------------------------------------
// Truth tables (rules 1–8)
// ---------------------------------------------------------------------------------------------

const WORKLOADS: &str = "
apiVersion: enforcer/v1
kind: Workload
metadata: {name: web-0}
spec: {service: web, addresses: [10.1.0.10, 'fd00:1::10']}
---
apiVersion: enforcer/v1
kind: Workload
metadata: {name: web-1}
spec: {service: web, addresses: [10.1.0.11]}
---
apiVersion: enforcer/v1
kind: Workload
metadata: {name: api-0}
spec: {service: api, addresses: [10.2.0.10, 'fd00:2::10']}
---
apiVersion: enforcer/v1
kind: Workload
metadata: {name: db-0}
spec: {service: db, addresses: [10.3.0.10, 'fd00:3::10']}
---
apiVersion: enforcer/v1
kind: Workload
metadata: {name: batch-0}
spec: {service: batch, addresses: [10.4.0.10]}
";

/// Named addresses of the truth tables.
fn addr(name: &str) -> IpAddr {
    let text = match name {
        "web" => "10.1.0.10",
        "web6" => "fd00:1::10",
        "web1" => "10.1.0.11",
        "api" => "10.2.0.10",
        "api6" => "fd00:2::10",
        "db" => "10.3.0.10",
        "db6" => "fd00:3::10",
        "batch" => "10.4.0.10",
        "host" => "10.0.0.1",
        "host6" => "fd00::1",
        "ext" => "198.51.100.7",
        "ext6" => "2001:db8::7",
        other => other,
    };
    text.parse()
        .unwrap_or_else(|_| panic!("unknown address {name}"))
}

fn table_ctx() -> NodeContext {
    NodeContext {
        host_addresses: [addr("host"), addr("host6")].into(),
        local_addresses: BTreeSet::new(),
    }
}

/// The truth-table workloads plus `policies`, each policy given as
/// `name, mode, service, spec lines` in a compact form.
fn set_of(policies: &[(&str, &str)]) -> PolicySet {
    let mut text = WORKLOADS.to_string();
    for (name, spec) in policies {
        write!(
            text,
            "---\napiVersion: enforcer/v1\nkind: FlowPolicy\nmetadata: {{name: {name}}}\nspec:\n{spec}\n"
        )
        .unwrap();
    }
    let docs = parse_documents("table.yaml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    PolicySet::from_documents(docs).unwrap_or_else(|e| panic!("{e}"))
}

/// A flow between named addresses; protocol by name (ICMP is 1 or 58 by address family).
fn flow(src: &str, dst: &str, protocol: &str, port: u16) -> Flow {
    let (src, dst) = (addr(src), addr(dst));
    let protocol = match protocol {
        "TCP" => 6,
        "UDP" => 17,
        "SCTP" => 132,
        "ICMP" if src.is_ipv6() => 58,
        "ICMP" => 1,
        "GRE" => 47,
        other => panic!("unknown protocol {other}"),
    };
    Flow {
        src,
        dst,
        protocol,
        port,
    }
}

/// One row: from, to, protocol, port, expected verdict.
type Row<'a> = (&'a str, &'a str, &'a str, u16, Verdict);

const ALLOW: Verdict = Verdict::Allow;
const DENY: Verdict = Verdict::Deny;
const AUDIT: Verdict = Verdict::Audit;

/// Judges every row with `explain` and with the compiled entries.
#[track_caller]
fn check_table(policies: &[(&str, &str)], rows: &[Row]) {
    let set = set_of(policies);
    let ctx = table_ctx();
    let compiled = compile(&set, &ctx);
    let dp = Datapath::new(&compiled);
    let mut failures = String::new();
    for (src, dst, proto, port, want) in rows {
        let f = flow(src, dst, proto, *port);
        let e = explain(&set, &ctx, &f);
        if e.verdict != *want {
            writeln!(
                failures,
                "{src} -> {dst} {proto} {port}: explain says {} ({}), expected {want}",
                e.verdict, e.reason
            )
            .unwrap();
        }
        if let Err(diff) = compare(&dp, &f, &e) {
            writeln!(failures, "{src} -> {dst} {proto} {port}: {diff}").unwrap();
        }
    }
    assert!(failures.is_empty(), "{failures}\npolicies: {policies:#?}");
}

/// `explain`'s full answer for one flow (the compiled entries must agree too).
#[track_caller]
fn explained(policies: &[(&str, &str)], f: &Flow) -> Explanation {
    let set = set_of(policies);
    let ctx = table_ctx();
    let e = explain(&set, &ctx, f);
    let compiled = compile(&set, &ctx);
    if let Err(diff) = compare(&Datapath::new(&compiled), f, &e) {
        panic!("{diff}\n{}", describe(&set, &ctx, f, &e));
    }
    e
}

#[test]
fn rule4_default_allow_when_not_isolated() {
    let rows: &[Row] = &[
        ("web", "api", "TCP", 80, ALLOW),
        ("api", "web", "UDP", 53, ALLOW),
        ("web6", "api6", "ICMP", 128, ALLOW),
        ("ext", "db", "TCP", 5432, ALLOW),
        ("db", "ext", "GRE", 0, ALLOW),
        ("host", "web", "TCP", 80, ALLOW),
        ("web", "host", "TCP", 22, ALLOW),
        ("ext", "ext6", "TCP", 1, ALLOW),
    ];
    check_table(&[], rows);
    // A policy for another service, and deny sections, isolate nothing.
    let policies = [
        ("db-in", "  service: db\n  ingress: []"),
        (
            "no-batch",
            "  service: api\n  ingressDeny: [{from: [{service: batch}]}]",
        ),
    ];
    let rows: &[Row] = &[
        ("web", "api", "TCP", 80, ALLOW),
        ("ext", "api", "UDP", 53, ALLOW),
        ("batch", "api", "TCP", 80, DENY),
        ("web", "db", "TCP", 5432, DENY),
        ("db", "web", "TCP", 80, ALLOW),
    ];
    check_table(&policies, rows);
}

#[test]
fn rule4_empty_ingress_isolates() {
    let policies = [("api-in", "  service: api\n  ingress: []")];
    let rows: &[Row] = &[
        ("web", "api", "TCP", 80, DENY),
        ("web6", "api6", "TCP", 80, DENY),
        ("ext", "api", "UDP", 53, DENY),
        ("db", "api", "ICMP", 8, DENY),
        ("api", "api", "TCP", 80, DENY),
        // Its egress is not isolated.
        ("api", "web", "TCP", 80, ALLOW),
        ("api", "ext", "TCP", 443, ALLOW),
        // Other services are not isolated.
        ("web", "db", "TCP", 5432, ALLOW),
        // Rule 6: the node may always reach its workloads.
        ("host", "api", "TCP", 80, ALLOW),
        ("host6", "api6", "ICMP", 128, ALLOW),
    ];
    check_table(&policies, rows);
}

#[test]
fn rule4_wildcard_service_policy() {
    let policies = [(
        "all-in",
        "  service: '*'\n  ingress: [{from: [{service: web}]}]",
    )];
    let rows: &[Row] = &[
        ("web", "api", "TCP", 80, ALLOW),
        ("web", "db", "UDP", 53, ALLOW),
        ("web", "web1", "TCP", 80, ALLOW),
        ("web1", "web", "TCP", 80, ALLOW),
        ("db", "api", "TCP", 80, DENY),
        ("batch", "db", "TCP", 5432, DENY),
        ("ext", "web", "TCP", 80, DENY),
        ("host", "db", "TCP", 5432, ALLOW),
        ("api", "ext", "TCP", 443, ALLOW),
    ];
    check_table(&policies, rows);
    // A peer `{service: "*"}` is any workload, not world nor host.
    let policies = [(
        "api-in",
        "  service: api\n  ingress: [{from: [{service: '*'}]}]",
    )];
    let rows: &[Row] = &[
        ("web", "api", "TCP", 80, ALLOW),
        ("batch", "api", "SCTP", 9, ALLOW),
        ("api", "api", "TCP", 80, ALLOW),
        ("ext", "api", "TCP", 80, DENY),
        ("ext6", "api6", "TCP", 80, DENY),
    ];
    check_table(&policies, rows);
}

#[test]
fn rule2_3_allow_by_service_port_and_range() {
    let policies = [(
        "api-in",
        "  service: api
  ingress:
    - from: [{service: web}]
      ports: [{protocol: TCP, port: 8080}, {port: 9000, endPort: 9010}, {protocol: UDP}]",
    )];
    let rows: &[Row] = &[
        ("web", "api", "TCP", 8080, ALLOW),
        ("web1", "api", "TCP", 8080, ALLOW),
        ("web6", "api6", "TCP", 8080, ALLOW),
        ("web", "api", "TCP", 8079, DENY),
        ("web", "api", "TCP", 8081, DENY),
        // Range edges (protocol defaults to TCP).
        ("web", "api", "TCP", 8999, DENY),
        ("web", "api", "TCP", 9000, ALLOW),
        ("web", "api", "TCP", 9005, ALLOW),
        ("web", "api", "TCP", 9010, ALLOW),
        ("web", "api", "TCP", 9011, DENY),
        // `port` omitted: every port of that protocol.
        ("web", "api", "UDP", 1, ALLOW),
        ("web", "api", "UDP", 53, ALLOW),
        ("web", "api", "UDP", 65535, ALLOW),
        ("web", "api", "SCTP", 8080, DENY),
        ("web", "api", "ICMP", 8, DENY),
        ("web", "api", "GRE", 0, DENY),
        // Another service.
        ("db", "api", "TCP", 8080, DENY),
        ("db", "api", "UDP", 53, DENY),
    ];
    check_table(&policies, rows);
    // The whole range, and the last port.
    let policies = [(
        "api-in",
        "  service: api
  ingress:
    - ports: [{protocol: SCTP, port: 1, endPort: 65535}, {protocol: UDP, port: 65535}]",
    )];
    let rows: &[Row] = &[
        ("web", "api", "SCTP", 1, ALLOW),
        ("ext", "api", "SCTP", 65535, ALLOW),
        ("ext", "api", "UDP", 65535, ALLOW),
        ("ext", "api", "UDP", 65534, DENY),
        ("ext", "api", "TCP", 65535, DENY),
    ];
    check_table(&policies, rows);
}

#[test]
fn rule3_protocols() {
    // UDP 53 is not TCP 53; ports omitted means every protocol (GRE included).
    let policies = [
        (
            "api-in",
            "  service: api\n  ingress: [{ports: [{protocol: UDP, port: 53}]}]",
        ),
        (
            "db-in",
            "  service: db\n  ingress: [{from: [{service: web}]}]",
        ),
    ];
    let rows: &[Row] = &[
        ("web", "api", "UDP", 53, ALLOW),
        ("web", "api", "TCP", 53, DENY),
        ("web", "api", "SCTP", 53, DENY),
        ("web", "api", "GRE", 0, DENY),
        ("web", "db", "GRE", 0, ALLOW),
        ("web", "db", "SCTP", 3868, ALLOW),
        ("web", "db", "ICMP", 8, ALLOW),
        ("web6", "db6", "ICMP", 128, ALLOW),
    ];
    check_table(&policies, rows);
}

#[test]
fn rule3_icmp() {
    let policies = [(
        "api-in",
        "  service: api\n  ingress: [{ports: [{protocol: ICMP}]}]",
    )];
    let rows: &[Row] = &[
        // ICMP covers ICMP and ICMPv6, every type.
        ("web", "api", "ICMP", 8, ALLOW),
        ("web", "api", "ICMP", 0, ALLOW),
        ("web6", "api6", "ICMP", 128, ALLOW),
        ("ext6", "api6", "ICMP", 135, ALLOW),
        ("web", "api", "TCP", 8, DENY),
        ("web", "api", "UDP", 0, DENY),
    ];
    check_table(&policies, rows);
}

#[test]
fn rule2_cidr_with_except() {
    let policies = [(
        "api-in",
        "  service: api
  ingress:
    - from:
        - {cidr: 192.0.2.0/24, except: [192.0.2.128/25]}
        - {cidr: '2001:db8::/32', except: ['2001:db8:bad::/48']}
        - {cidr: 10.1.0.11/32}",
    )];
    let rows: &[Row] = &[
        ("192.0.2.0", "api", "TCP", 80, ALLOW),
        ("192.0.2.10", "api", "TCP", 80, ALLOW),
        ("192.0.2.127", "api", "TCP", 80, ALLOW),
        ("192.0.2.128", "api", "TCP", 80, DENY),
        ("192.0.2.200", "api", "TCP", 80, DENY),
        ("192.0.2.255", "api", "TCP", 80, DENY),
        ("192.0.3.1", "api", "TCP", 80, DENY),
        ("192.0.1.255", "api", "TCP", 80, DENY),
        ("ext", "api", "TCP", 80, DENY),
        ("2001:db8::7", "api6", "UDP", 53, ALLOW),
        ("2001:db8:bad::7", "api6", "UDP", 53, DENY),
        ("2001:db9::7", "api6", "UDP", 53, DENY),
        // A CIDR matches workload addresses too, by address.
        ("web1", "api", "TCP", 80, ALLOW),
        ("web", "api", "TCP", 80, DENY),
    ];
    check_table(&policies, rows);
}

#[test]
fn rule2_ipv6_cidrs_do_not_match_ipv4() {
    // `::/0` is every IPv6 address, and no IPv4 one (the datapath stores IPv4 IPv4-mapped).
    let policies = [
        (
            "api-in",
            "  service: api\n  ingress: [{from: [{cidr: '::/0'}]}]",
        ),
        (
            "web-out",
            "  service: web\n  egress: [{to: [{cidr: '::/0'}]}]",
        ),
        (
            "db-in",
            "  service: db\n  ingress: [{from: [{cidr: 0.0.0.0/0}]}]",
        ),
    ];
    let rows: &[Row] = &[
        ("ext6", "api6", "TCP", 80, ALLOW),
        ("db6", "api6", "TCP", 80, ALLOW),
        ("ext", "api", "TCP", 80, DENY),
        ("db", "api", "TCP", 80, DENY),
        ("web6", "ext6", "TCP", 443, ALLOW),
        ("web", "ext", "TCP", 443, DENY),
        ("web", "db", "TCP", 443, DENY),
        ("web6", "host6", "TCP", 443, ALLOW),
        ("web", "host", "TCP", 443, DENY),
        ("ext", "db", "TCP", 5432, ALLOW),
        ("web6", "db6", "TCP", 5432, DENY),
        ("api", "db", "TCP", 5432, ALLOW),
    ];
    check_table(&policies, rows);
}

#[test]
fn rule5_deny_beats_allow() {
    let policies = [
        (
            "api-in",
            "  service: api\n  ingress: [{}]\n  ingressDeny: [{from: [{service: batch}]}]",
        ),
        // A deny in another policy (and a `"*"` one) wins too.
        (
            "no-ssh",
            "  service: '*'\n  ingressDeny: [{ports: [{port: 22}]}]",
        ),
        (
            "web-out",
            "  service: web
  egress: [{}]
  egressDeny: [{to: [{cidr: 198.51.100.0/24}], ports: [{protocol: TCP, port: 443}]}]",
        ),
    ];
    let rows: &[Row] = &[
        ("web", "api", "TCP", 80, ALLOW),
        ("batch", "api", "TCP", 80, DENY),
        ("batch", "api", "ICMP", 8, DENY),
        ("web", "api", "TCP", 22, DENY),
        ("web", "db", "TCP", 22, DENY),
        ("ext", "batch", "TCP", 22, DENY),
        ("web", "db", "TCP", 23, ALLOW),
        ("batch", "db", "TCP", 5432, ALLOW),
        ("web", "ext", "TCP", 443, DENY),
        ("web", "ext", "TCP", 80, ALLOW),
        ("web", "198.51.101.7", "TCP", 443, ALLOW),
        ("web", "api", "TCP", 443, ALLOW),
        // Host traffic to a workload passes even a matching ingress deny.
        ("host", "api", "TCP", 22, ALLOW),
    ];
    check_table(&policies, rows);
}

#[test]
fn rule4_egress_isolation() {
    let policies = [(
        "web-out",
        "  service: web\n  egress: [{to: [{service: api}], ports: [{port: 8080}]}]",
    )];
    let rows: &[Row] = &[
        ("web", "api", "TCP", 8080, ALLOW),
        ("web6", "api6", "TCP", 8080, ALLOW),
        ("web", "api", "TCP", 8081, DENY),
        ("web", "db", "TCP", 8080, DENY),
        ("web", "ext", "TCP", 8080, DENY),
        ("web", "web1", "TCP", 8080, DENY),
        // Workload → host is judged by the workload's egress.
        ("web", "host", "TCP", 8080, DENY),
        // Its ingress is not isolated; other services are not isolated.
        ("db", "web", "TCP", 80, ALLOW),
        ("ext", "web", "TCP", 80, ALLOW),
        ("api", "db", "TCP", 5432, ALLOW),
    ];
    check_table(&policies, rows);
}

#[test]
fn rule6_both_directions() {
    let policies = [
        (
            "web-out",
            "  service: web\n  egress: [{to: [{service: api}], ports: [{port: 8080}]}]",
        ),
        (
            "api-in",
            "  service: api\n  ingress: [{from: [{service: db}, {service: web}], ports: [{port: 8080}, {port: 9090}]}]",
        ),
    ];
    let rows: &[Row] = &[
        // Both sides allow.
        ("web", "api", "TCP", 8080, ALLOW),
        // The source's egress denies, the destination's ingress allows.
        ("web", "api", "TCP", 9090, DENY),
        // The source's egress allows, the destination's ingress denies.
        ("web", "api", "UDP", 8080, DENY),
        // Only the destination is isolated.
        ("db", "api", "TCP", 9090, ALLOW),
        ("batch", "api", "TCP", 9090, DENY),
    ];
    check_table(&policies, rows);
}

#[test]
fn rule6_world_and_host() {
    let policies = [
        ("api-in", "  service: api\n  ingress: []"),
        (
            "web-out",
            "  service: web\n  egress: [{to: [{cidr: 10.0.0.1/32}]}]",
        ),
        (
            "db-in",
            "  service: db\n  ingress: [{from: [{cidr: 198.51.100.0/24}]}]",
        ),
        (
            "deny-all",
            "  service: batch\n  ingress: []\n  ingressDeny: [{from: [{cidr: 0.0.0.0/0}]}]",
        ),
    ];
    let rows: &[Row] = &[
        // Workload → world: only the workload's egress is judged.
        ("api", "ext", "TCP", 443, ALLOW),
        ("web", "ext", "TCP", 443, DENY),
        ("db", "ext", "UDP", 53, ALLOW),
        // World → workload: only the workload's ingress.
        ("ext", "db", "TCP", 5432, ALLOW),
        ("198.51.101.1", "db", "TCP", 5432, DENY),
        ("ext", "api", "TCP", 80, DENY),
        ("ext", "web", "TCP", 80, ALLOW),
        // Host → workload: always allowed, even with a deny-all.
        ("host", "batch", "TCP", 80, ALLOW),
        ("host", "api", "ICMP", 8, ALLOW),
        ("host6", "api6", "TCP", 80, ALLOW),
        ("host", "db", "TCP", 5432, ALLOW),
        // Workload → host: judged by the workload's egress.
        ("web", "host", "TCP", 10250, ALLOW),
        ("web6", "host6", "TCP", 10250, DENY),
        ("api", "host", "TCP", 10250, ALLOW),
        // Neither side a workload.
        ("ext", "host", "TCP", 22, ALLOW),
        ("host", "ext", "TCP", 443, ALLOW),
    ];
    check_table(&policies, rows);
}

#[test]
fn rule8_audit() {
    // An enforce deny is a drop whatever audit policies say.
    let policies = [
        ("api-in", "  service: api\n  ingress: []"),
        (
            "api-audit",
            "  service: api\n  mode: audit\n  ingress: [{from: [{service: web}]}]",
        ),
    ];
    check_table(&policies, &[("web", "api", "TCP", 80, DENY)]);
    // Enforce allows, audit denies: audit.
    let policies = [
        ("api-audit", "  service: api\n  mode: audit\n  ingress: []"),
        (
            "web-out",
            "  service: web\n  egress: [{to: [{service: api}]}]",
        ),
    ];
    let rows: &[Row] = &[
        ("web", "api", "TCP", 80, AUDIT),
        ("ext", "api", "TCP", 80, AUDIT),
        ("web", "db", "TCP", 80, DENY),
        ("api", "db", "TCP", 80, ALLOW),
        ("host", "api", "TCP", 80, ALLOW),
    ];
    check_table(&policies, rows);
    // An audit policy that only allows: allowed flows are plain allows, the rest audit.
    let policies = [(
        "api-audit",
        "  service: api\n  mode: audit\n  ingress: [{from: [{service: web}], ports: [{port: 80}]}]",
    )];
    let rows: &[Row] = &[
        ("web", "api", "TCP", 80, ALLOW),
        ("web", "api", "TCP", 81, AUDIT),
        ("db", "api", "TCP", 80, AUDIT),
    ];
    check_table(&policies, rows);
    // The example of docs/policy.md, rule 8.
    let policies = [
        (
            "api-lockdown",
            "  service: api
  mode: audit
  ingress: [{from: [{service: web}], ports: [{port: 80}]}]
  ingressDeny: [{from: [{service: batch}]}]",
        ),
        (
            "no-telnet",
            "  service: '*'\n  ingressDeny: [{ports: [{port: 23}]}]",
        ),
    ];
    let rows: &[Row] = &[
        ("web", "api", "TCP", 80, ALLOW),
        ("web", "api", "TCP", 81, AUDIT),
        ("batch", "api", "TCP", 80, AUDIT),
        ("db", "api", "TCP", 23, DENY),
    ];
    check_table(&policies, rows);
    // A deny in audit mode: audit; with an enforce deny too: deny.
    let policies = [
        (
            "api-audit",
            "  service: api\n  mode: audit\n  ingressDeny: [{from: [{service: batch}]}, {ports: [{port: 22}]}]",
        ),
        (
            "web-out-audit",
            "  service: web\n  mode: audit\n  egressDeny: [{to: [{service: api}]}]",
        ),
        ("no-telnet", "  service: '*'\n  ingressDeny: [{ports: [{port: 23}]}]"),
    ];
    let rows: &[Row] = &[
        ("batch", "api", "TCP", 80, AUDIT),
        ("db", "api", "TCP", 22, AUDIT),
        ("db", "api", "TCP", 80, ALLOW),
        ("db", "api", "TCP", 23, DENY),
        ("web", "api", "TCP", 80, AUDIT),
        ("web", "api", "TCP", 23, DENY),
        ("web", "db", "TCP", 80, ALLOW),
    ];
    check_table(&policies, rows);
}

/// Every complete document in docs/policy.md's YAML examples is valid.
#[test]
fn documentation_examples_parse() {
    let doc = include_str!("../../docs/policy.md");
    let mut blocks = 0;
    for (i, block) in doc.split("```yaml\n").skip(1).enumerate() {
        let yaml = block.split("```").next().unwrap_or_default();
        if !yaml.starts_with("apiVersion:") {
            continue;
        }
        let docs = parse_documents(&format!("docs/policy.md block {i}"), yaml)
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let set = PolicySet::from_documents(docs).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert!(!set.is_empty());
        blocks += 1;
    }
    assert!(blocks >= 10, "only {blocks} examples found");
}

#[test]
#[expect(clippy::too_many_lines, reason = "one table of cases")]
fn explain_attribution() {
    let policies = [
        (
            "a-api",
            "  service: api
  ingress:
    - from: [{service: db}]
    - from: [{service: web}]
      ports: [{port: 8080}]
  ingressDeny: [{from: [{service: batch}], ports: [{port: 22}]}, {from: [{service: batch}]}]",
        ),
        (
            "b-web",
            "  service: web
  egress: [{to: [{service: api}]}, {to: [{cidr: 198.51.100.0/24}]}]
  egressDeny: [{to: [{cidr: 198.51.100.9/32}]}]",
        ),
        ("c-audit", "  service: db\n  mode: audit\n  ingress: []"),
    ];
    let check = |f: Flow, verdict, policy: Option<&str>, rule: Option<&str>, reason: &str| {
        let e = explained(&policies, &f);
        let (p, r) = (e.policy_label(), e.rule_label());
        let got = (e.verdict, p.as_deref(), r.as_deref(), e.reason.as_str());
        assert_eq!(got, (verdict, policy, rule, reason), "{f:?}");
    };
    // Allowed by both sides: the destination's rule is named.
    check(
        flow("web", "api", "TCP", 8080),
        ALLOW,
        Some("a-api"),
        Some("ingress[1]"),
        "allowed by ingress[1] of policy a-api",
    );
    // Allowed by the source's egress only (world has no ingress).
    check(
        flow("web", "198.51.100.7", "TCP", 443),
        ALLOW,
        Some("b-web"),
        Some("egress[1]"),
        "allowed by egress[1] of policy b-web",
    );
    // The first matching deny rule.
    check(
        flow("batch", "api", "TCP", 22),
        DENY,
        Some("a-api"),
        Some("ingressDeny[0]"),
        "denied by ingressDeny[0] of policy a-api",
    );
    check(
        flow("batch", "api", "TCP", 80),
        DENY,
        Some("a-api"),
        Some("ingressDeny[1]"),
        "denied by ingressDeny[1] of policy a-api",
    );
    check(
        flow("web", "198.51.100.9", "TCP", 443),
        DENY,
        Some("b-web"),
        Some("egressDeny[0]"),
        "denied by egressDeny[0] of policy b-web",
    );
    // Default deny: no policy, no rule.
    check(
        flow("web", "api", "TCP", 9090),
        DENY,
        None,
        None,
        "default deny of isolated service api (ingress)",
    );
    check(
        flow("web", "ext6", "TCP", 443),
        DENY,
        None,
        None,
        "default deny of isolated service web (egress)",
    );
    // Both sides deny: the source's decision is named.
    check(
        flow("web", "api", "UDP", 53),
        DENY,
        None,
        None,
        "default deny of isolated service api (ingress)",
    );
    check(
        flow("web", "db", "TCP", 5432),
        DENY,
        None,
        None,
        "default deny of isolated service web (egress)",
    );
    // Audit: the audit policy's decision, prefixed.
    check(
        flow("api", "db", "TCP", 5432),
        AUDIT,
        None,
        None,
        "audit: default deny of isolated service db (ingress)",
    );
    // Nothing isolates; host traffic; neither side a workload.
    check(
        flow("db", "web", "TCP", 1),
        ALLOW,
        None,
        None,
        "not isolated",
    );
    check(
        flow("api", "db", "GRE", 0),
        AUDIT,
        None,
        None,
        "audit: default deny of isolated service db (ingress)",
    );
    check(
        flow("api", "ext", "TCP", 443),
        ALLOW,
        None,
        None,
        "not isolated",
    );
    check(
        flow("host", "api", "TCP", 80),
        ALLOW,
        None,
        None,
        "host traffic to a local workload is always allowed",
    );
    check(
        flow("ext", "host", "TCP", 22),
        ALLOW,
        None,
        None,
        "neither side is a workload",
    );
}

#[test]
fn workload_address_that_is_also_a_host_address_is_the_workload() {
    // Rule 1: the Workload's identity wins (a pod on the host network).
    let policies = [(
        "api-in",
        "  service: api\n  ingress: [{from: [{service: web}]}]",
    )];
    let set = set_of(&policies);
    let ctx = node_with_hosts(&[addr("host"), addr("web"), addr("db")]);
    let compiled = compile(&set, &ctx);
    let dp = Datapath::new(&compiled);
    for (src, want) in [("web", ALLOW), ("db", DENY), ("host", ALLOW)] {
        let f = flow(src, "api", "TCP", 80);
        let e = explain(&set, &ctx, &f);
        assert_eq!(e.verdict, want, "{src}");
        compare(&dp, &f, &e).unwrap_or_else(|d| panic!("{src}: {d}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Property test: compiled entries ≡ explain
// ---------------------------------------------------------------------------------------------

/// The random choices the generators make. Drawn by proptest, which on a failure shrinks them
/// (toward 0, and fewer of them): fewer workloads, policies, rules and peers, and the first item
/// of every pick, down to a minimal failing set. Choices past the end are 0.
struct Rng<'a> {
    choices: &'a [u64],
    next: usize,
}

impl<'a> Rng<'a> {
    fn new(choices: &'a [u64]) -> Self {
        Rng { choices, next: 0 }
    }

    fn next(&mut self) -> u64 {
        let value = self.choices.get(self.next).copied().unwrap_or(0);
        self.next += 1;
        value
    }

    /// In `0..n` (n > 0), growing with the choice (so that shrinking it shrinks the result).
    fn below(&mut self, n: usize) -> usize {
        let n = u128::try_from(n).expect("usize fits in u128");
        usize::try_from((u128::from(self.next()) * n) >> 64).expect("below n")
    }

    /// In `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with `percent` % probability; a shrunk (0) choice is false (less is simpler).
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) >= 100 - percent
    }

    fn pick<'b, T>(&mut self, items: &'b [T]) -> &'b T {
        &items[self.below(items.len())]
    }

    fn port(&mut self) -> u16 {
        u16::try_from(self.next() & 0xffff).expect("16 bits")
    }
}

/// `len` choices from proptest's deterministic runner (sampling without a property).
fn sampled_choices(len: usize) -> Vec<u64> {
    let mut runner = TestRunner::deterministic();
    proptest::collection::vec(any::<u64>(), len)
        .new_tree(&mut runner)
        .expect("a vector of integers")
        .current()
}

/// Subnets of workload addresses: a few /24s and /64s.
const V4_SUBNETS: [[u8; 3]; 3] = [[10, 0, 1], [10, 0, 2], [10, 1, 0]];
const V6_SUBNETS: [u16; 3] = [0x1, 0x2, 0x3];

/// Host addresses to choose from (some inside workload subnets and CIDRs).
const HOSTS: &[&str] = &[
    "10.0.1.254",
    "10.0.9.1",
    "192.168.0.1",
    "fd00:1::fe",
    "fd00:9::1",
];

/// World addresses: inside workload subnets and CIDRs, at CIDR edges, and far away.
const WORLD: &[&str] = &[
    "10.0.1.100",
    "10.0.1.127",
    "10.0.1.128",
    "10.0.1.200",
    "10.0.2.130",
    "10.2.0.1",
    "10.255.255.255",
    "11.0.0.1",
    "192.0.2.1",
    "192.0.2.127",
    "192.0.2.128",
    "192.0.2.200",
    "192.0.2.255",
    "198.51.100.7",
    "8.8.8.8",
    "1.1.1.1",
    "255.255.255.254",
    "fd00:1::100",
    "fd00:1::ff",
    "fd00:2::ff00",
    "fd00:3::1:0:1",
    "fd00:4::1",
    "fd01::1",
    "2001:db8::1",
    "2001:db8:1::1",
    "2001:db8:ffff::1",
    "2001:4860::8888",
    "::2",
    "::1.2.3.4",
    "64:ff9b::808:808",
];

/// CIDRs to choose from: nested and overlapping each other, workload, host and world addresses.
const CIDRS: &[&str] = &[
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.0.0.0/16",
    "10.0.1.0/24",
    "10.0.1.0/25",
    "10.0.1.128/25",
    "10.0.1.192/26",
    "10.0.1.5/32",
    "10.0.1.200/32",
    "10.0.2.0/24",
    "10.0.9.0/24",
    "10.1.0.0/24",
    "192.0.2.0/24",
    "192.0.2.128/25",
    "192.0.2.192/26",
    "192.168.0.0/16",
    "::/0",
    "::/80",
    "fd00::/8",
    "fd00::/16",
    "fd00:1::/64",
    "fd00:1::/120",
    "fd00:1::/124",
    "fd00:2::/64",
    "fd00:9::/64",
    "2001:db8::/32",
    "2001:db8::/48",
    "2001:db8::/64",
];

/// Ports policies use, with the edges of their ranges.
const PORTS: &[u16] = &[
    1, 22, 53, 80, 443, 1000, 1023, 1024, 2000, 8080, 8443, 65534, 65535,
];

/// A generated case: the set, the node, and the addresses flows use.
struct Case {
    set: PolicySet,
    ctx: NodeContext,
    addresses: Vec<IpAddr>,
    /// `addresses` by family (IPv4, IPv6), and the workload addresses among them.
    by_family: [Vec<IpAddr>; 2],
    workloads_by_family: [Vec<IpAddr>; 2],
    ports: Vec<u16>,
}

/// A workload of `service` in namespace `default`, without labels or named ports.
fn service_workload(name: &str, service: &str, addresses: Vec<IpAddr>) -> Workload {
    Workload {
        name: name.to_string(),
        namespace: "default".into(),
        labels: Labels::default(),
        ports: Vec::new(),
        service: Some(service.to_string()),
        addresses,
        source: Source::default(),
    }
}

/// A node with these host addresses and no local workload addresses.
fn node_with_hosts(hosts: &[IpAddr]) -> NodeContext {
    NodeContext {
        host_addresses: hosts.iter().copied().collect(),
        local_addresses: BTreeSet::new(),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("valid address")
}

fn net(text: &str) -> IpNet {
    text.parse().expect("valid CIDR")
}

/// A random prefix of `addr` (host bits cleared).
fn prefix_of(rng: &mut Rng, addr: IpAddr) -> IpNet {
    let len = match addr {
        IpAddr::V4(_) => rng.range(8, 32),
        IpAddr::V6(_) if rng.chance(20) => rng.range(0, 64),
        IpAddr::V6(_) => rng.range(64, 128),
    };
    IpNet::new(addr, u8::try_from(len).expect("prefix length"))
        .expect("valid prefix length")
        .trunc()
}

fn gen_workloads(rng: &mut Rng, set: &mut PolicySet) -> Vec<IpAddr> {
    let mut used = BTreeSet::new();
    let services = rng.range(3, 6);
    for s in 0..services {
        for w in 0..rng.range(1, 3) {
            let mut addresses = Vec::new();
            for _ in 0..8 {
                if !addresses.is_empty() {
                    break;
                }
                if rng.chance(80) {
                    let [a, b, c] = *rng.pick(&V4_SUBNETS);
                    let host = u8::try_from(rng.range(1, 12)).expect("small");
                    addresses.push(IpAddr::V4(Ipv4Addr::new(a, b, c, host)));
                }
                if rng.chance(60) {
                    let subnet = *rng.pick(&V6_SUBNETS);
                    let host = u16::try_from(rng.range(1, 12)).expect("small");
                    addresses.push(IpAddr::V6(Ipv6Addr::new(
                        0xfd00, subnet, 0, 0, 0, 0, 0, host,
                    )));
                }
                addresses.retain(|a| !used.contains(a));
                addresses.dedup();
            }
            if addresses.is_empty() {
                // Shrunk choices repeat: an address of its own, outside every subnet.
                let [s, w] = [s, w].map(|i| u8::try_from(i).expect("small"));
                addresses.push(IpAddr::V4(Ipv4Addr::new(10, 3, s, w + 1)));
            }
            used.extend(addresses.iter().copied());
            let workload = service_workload(&format!("s{s}-{w}"), &format!("s{s}"), addresses);
            set.insert(workload.into())
                .expect("unique names and addresses");
        }
    }
    used.into_iter().collect()
}

fn gen_peer(rng: &mut Rng, services: &[String], addresses: &[IpAddr]) -> Peer {
    match rng.below(10) {
        0 => Peer::Service(ANY_SERVICE.into()),
        1 => Peer::Service("ghost".into()),
        2..=4 => Peer::Service(rng.pick(services).clone()),
        _ => {
            let cidr = if rng.chance(60) {
                net(rng.pick::<&str>(CIDRS))
            } else {
                let a = *rng.pick(addresses);
                prefix_of(rng, a)
            };
            let mut except = Vec::new();
            if rng.chance(40) {
                for _ in 0..rng.range(1, 2) {
                    let inside: Vec<IpNet> = CIDRS
                        .iter()
                        .map(|c| net(c))
                        .filter(|c| cidr.contains(c))
                        .collect();
                    let e = if !inside.is_empty() && rng.chance(50) {
                        *rng.pick(&inside)
                    } else {
                        let within: Vec<IpAddr> = addresses
                            .iter()
                            .copied()
                            .filter(|a| cidr.contains(a))
                            .collect();
                        if within.is_empty() {
                            continue;
                        }
                        let a = *rng.pick(&within);
                        let e = prefix_of(rng, a);
                        if !cidr.contains(&e) {
                            continue;
                        }
                        e
                    };
                    except.push(e);
                }
            }
            Peer::Cidr { cidr, except }
        }
    }
}

fn gen_port_spec(rng: &mut Rng) -> PortSpec {
    let protocol = *rng.pick(&[
        Protocol::Tcp,
        Protocol::Tcp,
        Protocol::Udp,
        Protocol::Sctp,
        Protocol::Icmp,
    ]);
    if protocol == Protocol::Icmp || rng.chance(15) {
        return PortSpec {
            name: None,
            protocol,
            port: None,
            end_port: None,
        };
    }
    let port = *rng.pick(PORTS);
    let end_port = if rng.chance(40) {
        let end = *rng.pick(PORTS);
        Some(end.max(port))
    } else {
        None
    };
    PortSpec {
        name: None,
        protocol,
        port: Some(port),
        end_port,
    }
}

fn gen_rules(
    rng: &mut Rng,
    services: &[String],
    addresses: &[IpAddr],
    max: usize,
    rate_limits: bool,
) -> Vec<Rule> {
    (0..rng.range(0, max))
        .map(|_| Rule {
            peers: (0..rng.range(0, 3).saturating_sub(usize::from(rng.chance(30))))
                .map(|_| gen_peer(rng, services, addresses))
                .collect(),
            ports: (0..rng.range(0, 3).saturating_sub(usize::from(rng.chance(30))))
                .map(|_| gen_port_spec(rng))
                .collect(),
            rate_limit: (rate_limits && rng.chance(10)).then_some(RateLimit {
                packets_per_second: Some(100),
                bytes_per_second: None,
                burst: None,
                per: RateScope::Source,
            }),
            line: 0,
        })
        .collect()
}

/// The choices of one case by concern (workloads, node, each policy, flows), so that shrinking
/// one part leaves the others as they were, and dropping a policy drops only that policy.
#[derive(Debug, Clone)]
struct CaseChoices {
    workloads: Vec<u64>,
    node: Vec<u64>,
    policies: Vec<Vec<u64>>,
    flows: Vec<u64>,
}

/// Choices for a case and `flows` flows.
fn case_choices(flows: usize) -> impl Strategy<Value = CaseChoices> {
    let choices = |len| proptest::collection::vec(any::<u64>(), len);
    (
        choices(64),
        choices(32),
        proptest::collection::vec(choices(160), 0..=6),
        choices(flows * 6),
    )
        .prop_map(|(workloads, node, policies, flows)| CaseChoices {
            workloads,
            node,
            policies,
            flows,
        })
}

fn gen_case(choices: &CaseChoices) -> Case {
    let mut set = PolicySet::new();
    let workload_addresses = gen_workloads(&mut Rng::new(&choices.workloads), &mut set);
    let rng = &mut Rng::new(&choices.node);
    let services = set.services();
    let mut ctx = NodeContext::default();
    for _ in 0..rng.range(1, 3) {
        ctx.host_addresses.insert(ip(rng.pick::<&str>(HOSTS)));
    }
    if rng.chance(10) {
        // A workload on the host network.
        ctx.host_addresses.insert(*rng.pick(&workload_addresses));
    }
    ctx.local_addresses = workload_addresses
        .iter()
        .copied()
        .filter(|_| rng.chance(50))
        .collect();
    let mut addresses = workload_addresses.clone();
    addresses.extend(ctx.host_addresses.iter().copied());
    addresses.extend(WORLD.iter().map(|a| ip(a)));
    for (p, policy_choices) in choices.policies.iter().enumerate() {
        let rng = &mut Rng::new(policy_choices);
        let service = if rng.chance(25) {
            ANY_SERVICE.to_string()
        } else {
            rng.pick(&services).clone()
        };
        let section = |rng: &mut Rng, max, rate_limits| {
            gen_rules(rng, &services, &addresses, max, rate_limits)
        };
        let policy = FlowPolicy {
            sensitive: false,
            namespace: None,
            selector: None,
            name: format!("p{p}"),
            service,
            mode: if rng.chance(30) {
                Mode::Audit
            } else {
                Mode::Enforce
            },
            ingress: rng.chance(55).then(|| section(rng, 3, true)),
            egress: rng.chance(45).then(|| section(rng, 3, false)),
            ingress_deny: if rng.chance(35) {
                section(rng, 2, false)
            } else {
                Vec::new()
            },
            egress_deny: if rng.chance(30) {
                section(rng, 2, false)
            } else {
                Vec::new()
            },
            source: Source::default(),
        };
        set.insert(policy.into()).expect("unique names");
    }
    // Flow endpoints: every known address, and the first and last address of every CIDR used.
    for p in set.policies.values() {
        for (_, _, rule) in p.rules() {
            for peer in &rule.peers {
                if let Peer::Cidr { cidr, except } = peer {
                    for n in std::iter::once(cidr).chain(except) {
                        addresses.push(n.network());
                        addresses.push(n.broadcast());
                    }
                }
            }
        }
    }
    // IPv4-mapped IPv6 addresses are IPv4 addresses to the datapath (one 16-byte form for both
    // families), and never workload or node addresses (the parser rejects them).
    addresses.retain(|a| !matches!(a, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()));
    addresses.sort();
    addresses.dedup();
    let mut ports: BTreeSet<u16> = [0, 1, 8, 128, 65535].into();
    for p in set.policies.values() {
        for (_, _, rule) in p.rules() {
            for spec in &rule.ports {
                let (lo, hi) = spec.range();
                for port in [lo, hi] {
                    ports.extend([port.saturating_sub(1), port, port.saturating_add(1)]);
                }
            }
        }
    }
    let family = |v6: bool, workloads: bool| -> Vec<IpAddr> {
        addresses
            .iter()
            .copied()
            .filter(|a| a.is_ipv6() == v6 && (!workloads || set.workload_of(*a).is_some()))
            .collect()
    };
    Case {
        by_family: [family(false, false), family(true, false)],
        workloads_by_family: [family(false, true), family(true, true)],
        set,
        ctx,
        addresses,
        ports: ports.into_iter().collect(),
    }
}

fn gen_flow(rng: &mut Rng, case: &Case) -> Flow {
    let src = *rng.pick(&case.addresses);
    // Half of the flows go to a workload (which policies isolate more often).
    let family = usize::from(src.is_ipv6());
    let (any, workloads) = (&case.by_family[family], &case.workloads_by_family[family]);
    let dst = if workloads.is_empty() || rng.chance(50) {
        *rng.pick(any)
    } else {
        *rng.pick(workloads)
    };
    let icmp = if src.is_ipv4() { 1 } else { 58 };
    let protocol = *rng.pick(&[6, 6, 17, 17, 132, icmp, icmp, 1, 58, 47, 255]);
    let port = if rng.chance(80) {
        *rng.pick(&case.ports)
    } else {
        rng.port()
    };
    Flow {
        src,
        dst,
        protocol,
        port,
    }
}

/// Flows judged per generated set.
const FLOWS: usize = 200;

/// One case: a policy set and `FLOWS` flows from `choices`; an error says how the compiled
/// entries and `explain` disagree. Counts the verdicts into `verdicts`.
fn property(choices: &CaseChoices, verdicts: &Cell<[usize; 3]>) -> Result<(), String> {
    let case = gen_case(choices);
    let mut rng = Rng::new(&choices.flows);
    let compiled = compile(&case.set, &case.ctx);
    let yaml = || Document::to_yaml_stream(&case.set.documents()).unwrap_or_default();
    check_entries(&compiled).map_err(|e| format!("{e}\n{}", yaml()))?;
    let dp = Datapath::new(&compiled);
    for _ in 0..FLOWS {
        let f = gen_flow(&mut rng, &case);
        let e = explain(&case.set, &case.ctx, &f);
        let mut counts = verdicts.get();
        counts[e.verdict as usize] += 1;
        verdicts.set(counts);
        compare(&dp, &f, &e)
            .map_err(|diff| format!("{diff}\n{}", describe(&case.set, &case.ctx, &f, &e)))?;
    }
    Ok(())
}

/// Runs `property` on `cases` vectors of `len` choices drawn by proptest from `seed`; a failure is
/// shrunk to minimal choices and reported with the property's message for them.
fn run_property<S: Strategy>(
    seed: u64,
    cases: u32,
    choices: &S,
    property: impl Fn(&S::Value) -> Result<(), String>,
) {
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_iters: 100_000,
        ..ProptestConfig::default()
    };
    let result = TestRunner::new(config).run(choices, |choices| {
        property(&choices).map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("seed {seed:#x}: {e}");
    }
}

/// A failure shrinks: a property that fails on any ingress deny rule is reduced to one policy
/// with one deny rule without peers or ports.
#[test]
fn a_failing_case_shrinks_to_a_minimal_set() {
    let config = ProptestConfig {
        cases: 200,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(1),
        max_shrink_iters: 100_000,
        ..ProptestConfig::default()
    };
    let result = TestRunner::new(config).run(&case_choices(0), |choices| {
        let case = gen_case(&choices);
        let denies = case.set.policies.values().map(|p| p.ingress_deny.len());
        if denies.sum::<usize>() > 0 {
            return Err(TestCaseError::fail("a deny rule"));
        }
        Ok(())
    });
    let Err(proptest::test_runner::TestError::Fail(_, minimal)) = result else {
        panic!("no set with a deny rule in 200 cases: {result:?}")
    };
    let case = gen_case(&minimal);
    let policies: Vec<&FlowPolicy> = case.set.policies.values().collect();
    assert_eq!(policies.len(), 1, "{policies:?}");
    assert_eq!(policies[0].ingress_deny, [Rule::default()], "{policies:?}");
}

/// 2000 sets by default; `POLICY_PROPERTY_SEED` and `POLICY_PROPERTY_SETS` explore further, e.g.
/// `POLICY_PROPERTY_SEED=7 POLICY_PROPERTY_SETS=50000 cargo test -p enforcer-policy --lib
/// compiled_entries_decide_like_explain`. A failure is shrunk by proptest to a minimal set and
/// flow, printed as YAML with the two decisions.
#[test]
fn compiled_entries_decide_like_explain() {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let seed = env("POLICY_PROPERTY_SEED").unwrap_or(0x5eed_0001_d00d_f00d);
    let sets = env("POLICY_PROPERTY_SETS").map_or(2000, |n| u32::try_from(n).unwrap_or(2000));
    let start = Instant::now();
    let verdicts = Cell::new([0usize; 3]);
    run_property(seed, sets, &case_choices(FLOWS), |choices| {
        property(choices, &verdicts)
    });
    let verdicts = verdicts.get();
    eprintln!(
        "{sets} random policy sets x {FLOWS} flows: {} allow, {} deny, {} audit ({:?})",
        verdicts[Verdict::Allow as usize],
        verdicts[Verdict::Deny as usize],
        verdicts[Verdict::Audit as usize],
        start.elapsed()
    );
    // Every verdict is exercised.
    let sets = usize::try_from(sets).expect("u32 fits");
    assert!(verdicts.iter().all(|n| *n > sets), "{verdicts:?}");
}

// ---------------------------------------------------------------------------------------------
// Scale
// ---------------------------------------------------------------------------------------------

/// Services of the scale test, each with one policy of 10 rules.
const SCALE_SERVICES: usize = 1000;

/// The IPv4 address `host` in service `i`'s /24.
fn scale_v4(i: usize, host: u8) -> IpAddr {
    let [_, _, hi, lo] = u32::try_from(i % SCALE_SERVICES)
        .expect("small")
        .to_be_bytes();
    IpAddr::V4(Ipv4Addr::new(10, hi, lo, host))
}

/// The port of service `i`'s `k`-th rule (TCP, or UDP when `k` is a multiple of 3).
fn scale_port(i: usize, k: usize) -> u16 {
    u16::try_from(1000 + (i * 7 + k) % 50_000).expect("port")
}

/// The `o`-th world /24 of service `i`.
fn scale_world(i: usize, o: usize) -> IpNet {
    let [_, _, a, b] = u32::try_from(i * 4 + o).expect("small").to_be_bytes();
    IpNet::new(IpAddr::V4(Ipv4Addr::new(172, 16 + a, b, 0)), 24).expect("valid")
}

/// Service `i`'s policy: ingress from 7 other services on their own ports (single ports and
/// ranges, TCP and UDP), from a world CIDR with an except on TCP 443, ICMP from anyone; one
/// egress deny to another world CIDR. Every tenth policy is in audit mode.
fn scale_policy(i: usize) -> FlowPolicy {
    let tcp = |port| PortSpec {
        name: None,
        protocol: Protocol::Tcp,
        port: Some(port),
        end_port: None,
    };
    let mut ingress: Vec<Rule> = (1..=7)
        .map(|k| Rule {
            peers: vec![Peer::Service(format!("svc{}", (i + k) % SCALE_SERVICES))],
            ports: vec![PortSpec {
                name: None,
                protocol: if k.is_multiple_of(3) {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
                port: Some(scale_port(i, k)),
                end_port: k.is_multiple_of(2).then(|| scale_port(i, k) + 10),
            }],
            ..Rule::default()
        })
        .collect();
    ingress.push(Rule {
        peers: vec![Peer::Cidr {
            cidr: scale_world(i, 0),
            except: vec![IpNet::new(scale_world(i, 0).network(), 26).expect("valid")],
        }],
        ports: vec![tcp(443)],
        ..Rule::default()
    });
    ingress.push(Rule {
        ports: vec![PortSpec {
            name: None,
            protocol: Protocol::Icmp,
            port: None,
            end_port: None,
        }],
        ..Rule::default()
    });
    FlowPolicy {
        sensitive: false,
        namespace: None,
        selector: None,
        name: format!("svc{i}-policy"),
        service: format!("svc{i}"),
        mode: if i.is_multiple_of(10) {
            Mode::Audit
        } else {
            Mode::Enforce
        },
        ingress: Some(ingress),
        egress: None,
        ingress_deny: Vec::new(),
        egress_deny: vec![Rule {
            peers: vec![Peer::Cidr {
                cidr: scale_world(i, 1),
                except: Vec::new(),
            }],
            ..Rule::default()
        }],
        source: Source::default(),
    }
}

/// 1000 services (one workload each, IPv4 and IPv6) and 10 000 rules.
fn scale_set() -> PolicySet {
    let mut set = PolicySet::new();
    for i in 0..SCALE_SERVICES {
        let v6 = Ipv6Addr::new(0xfd00, u16::try_from(i).expect("small"), 0, 0, 0, 0, 0, 10);
        let addresses = vec![scale_v4(i, 10), IpAddr::V6(v6)];
        let workload = service_workload(&format!("svc{i}-0"), &format!("svc{i}"), addresses);
        set.insert(workload.into()).expect("unique");
        set.insert(scale_policy(i).into()).expect("unique");
    }
    set
}

#[test]
fn ten_thousand_rules() {
    let set = scale_set();
    let rules: usize = set.policies.values().map(|p| p.rules().count()).sum();
    assert_eq!(rules, 10_000);
    let ctx = node_with_hosts(&[ip("10.255.0.1")]);
    let start = Instant::now();
    let compiled = compile(&set, &ctx);
    let took = start.elapsed();
    eprintln!(
        "compiled {rules} rules of {SCALE_SERVICES} services in {took:?}: {} identities, {} \
         CIDR classes, {} policy entries, {} rule ids",
        compiled.identities.len(),
        compiled.cidrs.len(),
        compiled.policy.len(),
        compiled.rules.len()
    );
    check_entries(&compiled).unwrap();
    let dp = Datapath::new(&compiled);
    // Sources: workloads, the node, world addresses inside and outside the CIDRs and excepts.
    let mut sources: Vec<IpAddr> = set
        .workloads
        .values()
        .flat_map(|w| w.addresses.iter().copied())
        .filter(IpAddr::is_ipv4)
        .collect();
    for (prefix, _) in &compiled.cidrs {
        for offset in [1, 100] {
            let v6 = Ipv6Addr::from(prefix.addr + offset);
            sources.extend(v6.to_ipv4_mapped().map(IpAddr::V4));
        }
    }
    sources.extend([ip("10.255.0.1"), ip("198.51.100.7")]);
    let choices = sampled_choices(3000 * 8);
    let mut rng = Rng::new(&choices);
    let mut verdicts = BTreeSet::new();
    for _ in 0..3000 {
        let dst = rng.below(SCALE_SERVICES);
        // Mostly flows that a rule names, around its port.
        let f = if rng.chance(70) {
            let k = rng.range(1, 7);
            let src = if rng.chance(80) {
                scale_v4(dst + k, 10)
            } else {
                *rng.pick(&sources)
            };
            Flow {
                src,
                dst: scale_v4(dst, 10),
                protocol: if k.is_multiple_of(3) { 17 } else { 6 },
                port: scale_port(dst, k) + u16::try_from(rng.below(12)).expect("small"),
            }
        } else {
            Flow {
                src: *rng.pick(&sources),
                dst: scale_v4(dst, 10),
                protocol: *rng.pick(&[6, 17, 1, 47]),
                port: *rng.pick(&[443, 8, 1000]),
            }
        };
        let e = explain(&set, &ctx, &f);
        if let Err(diff) = compare(&dp, &f, &e) {
            panic!("{diff}: {f:?} {e:?}");
        }
        verdicts.insert(e.verdict);
    }
    assert_eq!(verdicts.len(), 3, "{verdicts:?}");
    // A workload's egress to its denied world CIDR.
    let f = Flow {
        src: scale_v4(5, 10),
        dst: ip("172.16.21.9"),
        protocol: 6,
        port: 80,
    };
    assert_eq!(explain(&set, &ctx, &f).verdict, Verdict::Deny);
    assert_eq!(dp.sim.verdict(&f), Verdict::Deny);
}

/// A `"*"` policy admitting every workload into every service: the compiler must not write a
/// table per (service, peer service) pair (a million entries for 1 000 services).
#[test]
fn every_service_from_every_service() {
    let mut set = PolicySet::new();
    for i in 0..SCALE_SERVICES {
        let workload = service_workload(
            &format!("svc{i}-0"),
            &format!("svc{i}"),
            vec![scale_v4(i, 10)],
        );
        set.insert(workload.into()).expect("unique");
    }
    let docs = parse_documents(
        "star.yaml",
        "apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: mesh}
spec:
  service: '*'
  ingress: [{from: [{service: '*'}]}, {from: [{cidr: 192.0.2.0/24}], ports: [{port: 443}]}]
  ingressDeny: [{from: [{service: svc7}], ports: [{port: 22}]}]",
    )
    .expect("valid");
    for doc in docs {
        set.insert(doc).expect("unique");
    }
    let ctx = node_with_hosts(&[ip("10.255.0.1")]);
    let start = Instant::now();
    let compiled = compile(&set, &ctx);
    eprintln!(
        "\"*\" from \"*\" over {SCALE_SERVICES} services: {:?}, {} policy entries",
        start.elapsed(),
        compiled.policy.len()
    );
    assert!(compiled.policy.len() < 10 * SCALE_SERVICES);
    check_entries(&compiled).unwrap();
    let dp = Datapath::new(&compiled);
    let choices = sampled_choices(2000 * 6);
    let mut rng = Rng::new(&choices);
    let sources = [ip("10.255.0.1"), ip("192.0.2.1"), ip("198.51.100.7")];
    for _ in 0..2000 {
        let src = if rng.chance(70) {
            scale_v4(rng.below(SCALE_SERVICES), 10)
        } else {
            *rng.pick(&sources)
        };
        let f = Flow {
            src,
            dst: scale_v4(rng.below(SCALE_SERVICES), 10),
            protocol: *rng.pick(&[6, 17, 1]),
            port: *rng.pick(&[22, 443, 8]),
        };
        let e = explain(&set, &ctx, &f);
        if let Err(diff) = compare(&dp, &f, &e) {
            panic!("{diff}: {f:?} {e:?}");
        }
    }
}

mod kube_cases;
