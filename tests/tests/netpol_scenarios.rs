//! The `NetworkPolicy` scenarios (`tests/scenarios/netpol-*.yaml`) stay evidence: at least 40 of
//! them, each with allowed and denied probes, and every denied probe backed by a live control
//! in the same scenario, so that a deny cannot pass because something is dead:
//! - the destination's server on that protocol and port answers some allowed probe, and
//! - a pod that sends a denied probe sends or answers some allowed probe.
//!
//! (The probes themselves run in `cargo xtask scenario`, live and offline.)

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use enforcer_tests::scenario::{
    model::{Endpoint, Expect, Probe, Scenario},
    parse::parse_scenario,
};

fn scenarios() -> Result<Vec<(String, Scenario)>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let yaml = path.extension().is_some_and(|e| e == "yaml");
        if name.starts_with("netpol-") && yaml {
            let text = std::fs::read_to_string(&path)?;
            let s = parse_scenario(&name, &text).map_err(|e| anyhow!("{e}"))?;
            out.push((name, s));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// What must be alive for a probe to be answered: (destination, protocol, port, family).
fn target(p: &Probe) -> (String, String, Option<u16>, String) {
    (
        p.to.clone(),
        p.protocol.to_string(),
        p.port,
        p.family.to_string(),
    )
}

/// Missing controls of one scenario, as readable lines.
fn missing_controls(file: &str, s: &Scenario) -> Vec<String> {
    let probes: Vec<&Probe> = s.steps.iter().flat_map(|st| st.probes.iter()).collect();
    let allowed: Vec<&&Probe> = probes
        .iter()
        .filter(|p| p.expect == Expect::Allow)
        .collect();
    let live_targets: BTreeSet<_> = allowed.iter().map(|p| target(p)).collect();
    let live_pods: BTreeSet<(String, String)> = allowed
        .iter()
        .flat_map(|p| [p.from.clone(), p.to.clone()].map(|e| (e, p.family.to_string())))
        .collect();
    let is_pod = |name: &str| matches!(s.endpoint(name), Some(Endpoint::Workload(_)));
    let mut missing = Vec::new();
    for p in probes.iter().filter(|p| p.expect == Expect::Deny) {
        if is_pod(&p.to) && !live_targets.contains(&target(p)) {
            missing.push(format!(
                "{file}:{}: no allowed probe reaches the destination of {p}",
                p.line
            ));
        }
        if is_pod(&p.from) && !live_pods.contains(&(p.from.clone(), p.family.to_string())) {
            missing.push(format!(
                "{file}:{}: the source of {p} is in no allowed probe",
                p.line
            ));
        }
    }
    if allowed.is_empty() || allowed.len() == probes.len() {
        missing.push(format!("{file}: needs both allowed and denied probes"));
    }
    missing
}

#[test]
fn every_denied_probe_has_a_live_control() -> Result<()> {
    let all = scenarios()?;
    assert!(
        all.len() >= 40,
        "at least 40 NetworkPolicy scenarios, found {}",
        all.len()
    );
    let missing: Vec<String> = all
        .iter()
        .flat_map(|(file, s)| missing_controls(file, s))
        .collect();
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    Ok(())
}
