//! Every policy in the repository is lint-clean, or each finding is justified:
//! - examples/: `enforcer policy lint -f examples/` (the CLI contract) exits 0 with no finding, so
//!   docs/lint.md's claim is checked, not typed by hand;
//! - deploy/kubernetes/examples (`ClusterFlowPolicy` objects, converted as the agent converts them)
//!   linted with the example workloads and the two services they name besides: each finding is
//!   one [`DEPLOY_ALLOWED`] lists, with its reason;
//! - tests/scenarios/: each scenario's policy set after each of its steps, with its own
//!   namespaces and workloads. Scenarios are deliberately odd (each shows one semantic point,
//!   often with a shadowed or over-broad rule on purpose): a finding is justified by an
//!   `# enforcer:ignore=ID reason` comment in the scenario file, or by an entry of
//!   [`SCENARIO_ALLOWED`] below, each with its reason. Anything else fails the test.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{ensure, Context, Result};
use enforcer::kube::{convert, crd::ClusterFlowPolicy};
use enforcer_policy::{
    lint::{lint, suppress, Check, Finding, LintConfig},
    parse::parse_documents,
    Document, PolicySet,
};
use enforcer_tests::{cluster::enforcer_bin, scenario::parse::parse_scenario};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Findings every scenario may have, by kind, and why that is no defect of a scenario.
const SCENARIO_ALLOWED: &[(Check, &str)] = &[
    (
        Check::NotIsolated,
        "a scenario isolates only the services its point is about; the others stay open on \
         purpose, as positive controls (their probes expect allow)",
    ),
    (
        Check::NoDefaultDeny,
        "a scenario shows one rule's semantics; a namespace-wide default deny would change what \
         it shows (scenarios 02, 03, 37 and netpol-01..04 test default denies themselves)",
    ),
    (
        Check::ReachableFromOutside,
        "scenarios probe from externals (the `world`) on purpose: which services the world \
         reaches is what several of them check",
    ),
    (
        Check::NoInventory,
        "never expected: every scenario declares workloads (kept here so a scenario without \
         them is reported as such, not as a missing justification)",
    ),
];

/// Findings of one scenario file over all its steps (deduplicated), minus its suppressions.
fn scenario_findings(path: &Path) -> Result<Vec<Finding>> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {file}"))?;
    let scenario = parse_scenario(&file, &text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut set = PolicySet::from_documents(scenario.workload_documents())
        .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    let cfg = LintConfig::default();
    let mut all: BTreeMap<(String, usize, String), Finding> = BTreeMap::new();
    for step in &scenario.steps {
        // A step the engine refuses leaves the set as it was (what the scenario checks).
        if !step.apply.is_empty() && set.apply(step.apply.clone()).is_err() {
            continue;
        }
        for selector in &step.delete {
            set.delete(selector);
        }
        for f in lint(&set, None, &cfg) {
            let key = (f.id.clone(), f.location.line, f.message.clone());
            all.entry(key).or_insert(f);
        }
    }
    let texts = BTreeMap::from([(file, text)]);
    Ok(suppress::apply(all.into_values().collect(), &texts).0)
}

#[test]
fn examples_are_lint_clean() -> Result<()> {
    let out = std::process::Command::new(enforcer_bin()?)
        .args(["policy", "lint", "-f"])
        .arg(repo("examples"))
        .output()
        .context("running enforcer policy lint")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.contains("0 finding(s)"),
        "enforcer policy lint -f examples/: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The services the deploy manifests name besides examples/workloads.yaml's web and api.
const DEPLOY_INVENTORY: &str = "
apiVersion: enforcer/v1
kind: Workload
metadata: {name: db-0}
spec: {service: db, addresses: [10.10.3.10]}
---
apiVersion: enforcer/v1
kind: Workload
metadata: {name: batch-0}
spec: {service: batch, addresses: [10.10.4.10]}
";

/// The deploy examples' findings, by kind and policy, and why each is what the example shows.
const DEPLOY_ALLOWED: &[(Check, Option<&str>, &str)] = &[
    (
        Check::ReachableFromOutside,
        Some("api-ingress"),
        "the example shows a CIDR peer with except (a load balancer's range) into api",
    ),
    (
        Check::Redundant,
        Some("api-ingress"),
        "the example shows an ingressDeny rule: batch is denied by api's isolation already, and \
         the deny keeps it so if a later allow admits batch",
    ),
    (
        Check::NoDefaultDeny,
        None,
        "the example's cluster-wide default deny is in audit mode: what it would drop is reported \
         before its mode is switched to enforce (docs/deploy.md)",
    ),
];

#[test]
fn deploy_example_findings_are_justified() -> Result<()> {
    let workloads = repo("examples/workloads.yaml");
    let text = std::fs::read_to_string(&workloads)?;
    let mut docs: Vec<Document> = parse_documents(&workloads.display().to_string(), &text)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    docs.extend(
        parse_documents("DEPLOY_INVENTORY", DEPLOY_INVENTORY)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let files = yaml_files(&repo("deploy/kubernetes/examples"))?;
    ensure!(!files.is_empty(), "no deploy/kubernetes/examples/*.yaml");
    for path in &files {
        let object: ClusterFlowPolicy = serde_yaml_ng::from_str(&std::fs::read_to_string(path)?)
            .with_context(|| format!("{}: not a ClusterFlowPolicy", path.display()))?;
        docs.push(convert::cluster_flow_policy(&object).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    let set = PolicySet::from_documents(docs).map_err(|e| anyhow::anyhow!("{e}"))?;
    let unjustified: Vec<Finding> = lint(&set, None, &LintConfig::default())
        .into_iter()
        .filter(|f| {
            !DEPLOY_ALLOWED.iter().any(|(check, policy, _)| {
                f.check == Some(*check) && (policy.is_none() || f.policy.as_deref() == *policy)
            })
        })
        .collect();
    ensure!(
        unjustified.is_empty(),
        "deploy/kubernetes/examples (with examples/workloads.yaml): {unjustified:#?}"
    );
    Ok(())
}

#[test]
fn scenario_findings_are_justified() -> Result<()> {
    let allowed: BTreeSet<Check> = SCENARIO_ALLOWED.iter().map(|(c, _)| *c).collect();
    let mut unjustified = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let files = yaml_files(&repo("tests/scenarios"))?;
    ensure!(files.len() > 40, "only {} scenarios found", files.len());
    for path in &files {
        for f in scenario_findings(path)? {
            if f.check.is_some_and(|c| allowed.contains(&c)) {
                *counts.entry(f.check.map_or("", Check::code)).or_default() += 1;
            } else {
                unjustified.push(format!(
                    "{} {} {}: {} ({})",
                    f.location,
                    f.id,
                    f.policy.as_deref().unwrap_or(""),
                    f.message,
                    f.rule.as_deref().unwrap_or("")
                ));
            }
        }
    }
    eprintln!("allowed by kind over {} scenarios: {counts:?}", files.len());
    ensure!(
        unjustified.is_empty(),
        "{} scenario finding(s) neither suppressed in the file nor allowed here:\n{}",
        unjustified.len(),
        unjustified.join("\n")
    );
    Ok(())
}
