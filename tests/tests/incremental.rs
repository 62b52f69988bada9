//! Incremental installs (docs/architecture.md, "Installing a generation"): a one-rule change and
//! a one-workload relabel write only the map entries that change, and the verdicts through the
//! real programs (`BPF_PROG_TEST_RUN`) are right before and after each install. Needs root
//! (skipped otherwise).

use std::{fmt::Write as _, net::IpAddr};

use enforcer::{
    datapath::{Datapath, InstallWrites},
    policy::{compile, parse::parse_documents, Compiled, NodeContext, PolicySet},
};
use enforcer_common::{maps::names, programs};
use enforcer_tests::{
    frames::Frame,
    testrun::{run_tc, test_endpoints, TC_PASS, TC_SHOT},
};

/// Services besides web and api, each with a policy of its own: the policy is large, so that
/// rewriting it would show in the write counts.
const OTHERS: usize = 500;

fn policy(api_ports: &str, web_service: &str) -> String {
    let mut y = format!(
        "apiVersion: enforcer/v1\nkind: Workload\nmetadata: {{name: web-0}}\nspec: {{service: {web_service}, addresses: [10.10.1.10]}}\n\
         ---\napiVersion: enforcer/v1\nkind: Workload\nmetadata: {{name: api-0}}\nspec: {{service: api, addresses: [10.10.2.10]}}\n\
         ---\napiVersion: enforcer/v1\nkind: FlowPolicy\nmetadata: {{name: api-ingress}}\nspec:\n  service: api\n  ingress:\n    \
         - from: [{{service: web}}]\n      ports: [{api_ports}]\n"
    );
    for i in 0..OTHERS {
        let _ = write!(
            y,
            "---\napiVersion: enforcer/v1\nkind: Workload\nmetadata: {{name: s{i}}}\nspec: {{service: s{i}, addresses: [10.20.{}.{}]}}\n\
             ---\napiVersion: enforcer/v1\nkind: FlowPolicy\nmetadata: {{name: p{i}}}\nspec:\n  service: s{i}\n  ingress:\n    \
             - from: [{{service: s{}}}]\n      ports: [{{protocol: TCP, port: {}}}]\n",
            i / 250,
            i % 250 + 1,
            (i + 1) % OTHERS,
            1000 + i
        );
    }
    y
}

fn compiled(yaml: &str) -> (Compiled, PolicySet) {
    let docs = parse_documents("incremental.yaml", yaml).expect("valid policy");
    let set = PolicySet::from_documents(docs).expect("valid set");
    (compile(&set, &NodeContext::default()), set)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// web → api on `port`, a fresh flow each time (`sport`), judged at api's ingress (`to_pod`).
fn web_to_api(dp: &Datapath, sport: u16, port: u16) -> u32 {
    let f = Frame::tcp_syn(ip("10.10.1.10"), ip("10.10.2.10"), sport, port).build();
    run_tc(dp, programs::TO_POD, &f)
}

fn written(w: &InstallWrites, map: &str) -> usize {
    w.maps
        .iter()
        .filter(|(m, ..)| *m == map)
        .map(|(_, put, removed)| put + removed)
        .sum()
}

#[test]
fn a_one_rule_change_and_a_relabel_write_only_what_changes() {
    if enforcer_tests::skip_unless_root() {
        return;
    }
    let base_ports = "{protocol: TCP, port: 8080}";
    let (base, set) = compiled(&policy(base_ports, "web"));
    let endpoints = test_endpoints(&set);
    let mut dp = Datapath::load(None).expect("load eBPF object");
    // The first two installs fill the two slots (each read back from the maps first).
    for _ in 0..2 {
        dp.install(&base, &endpoints).expect("install");
        assert!(dp.last_install_writes().read_back);
    }
    let full = written(dp.last_install_writes(), names::POLICY);
    assert_eq!(
        full,
        base.policy.len(),
        "a fresh slot is written completely"
    );
    assert_eq!(web_to_api(&dp, 40_000, 8080), TC_PASS, "allowed before");
    assert_eq!(web_to_api(&dp, 40_001, 9999), TC_SHOT, "denied before");

    // One rule gains a port: its table changes, nothing else.
    let (changed, _) = compiled(&policy(
        &format!("{base_ports}, {{protocol: TCP, port: 9999}}"),
        "web",
    ));
    dp.install(&changed, &endpoints)
        .expect("install the change");
    let w = dp.last_install_writes().clone();
    assert!(!w.read_back);
    eprintln!(
        "one-rule change: {} writes in all (POLICY: {} of {} entries)",
        w.total(),
        written(&w, names::POLICY),
        changed.policy.len()
    );
    assert!(written(&w, names::POLICY) > 0, "the change is written");
    assert!(
        w.total() <= 8,
        "a one-rule change wrote {} entries: {w:?}",
        w.total()
    );
    assert_eq!(web_to_api(&dp, 40_002, 9999), TC_PASS, "allowed after");
    assert_eq!(
        web_to_api(&dp, 40_003, 8080),
        TC_PASS,
        "still allowed after"
    );

    // Back: the other slot still holds the base generation, so nothing is written to it.
    dp.install(&base, &endpoints).expect("install the revert");
    assert_eq!(dp.last_install_writes().total(), 0);
    assert_eq!(web_to_api(&dp, 40_004, 9999), TC_SHOT, "denied again");
    assert_eq!(web_to_api(&dp, 40_005, 8080), TC_PASS);

    // Both slots hold the base generation again.
    dp.install(&base, &endpoints).expect("install the base");
    // web-0 becomes another service: its address gets another identity, api's table for web
    // goes; no other identity is renumbered, so nothing else is written.
    let (relabelled, _) = compiled(&policy(base_ports, "batch"));
    dp.install(&relabelled, &endpoints)
        .expect("install the relabel");
    let w = dp.last_install_writes().clone();
    eprintln!("relabel: {} writes in all", w.total());
    assert!(written(&w, names::IDENTITIES) >= 1);
    assert!(
        w.total() <= 8,
        "a relabel wrote {} entries: {w:?}",
        w.total()
    );
    assert_eq!(
        web_to_api(&dp, 40_006, 8080),
        TC_SHOT,
        "the relabelled pod is no longer web"
    );
    dp.install(&base, &endpoints)
        .expect("install the base again");
    assert_eq!(web_to_api(&dp, 40_007, 8080), TC_PASS, "and web again");
}
