//! `selftest` (run by `cargo xtask selftest`): deliberately broken runs of the live scenario
//! runner, each proving one guard. A case passes when the guard catches the sabotage; each guard
//! also has a control case (the same run without sabotage passes), so a guard that rejects
//! everything does not count as working. Prints one line per case and `N passed, M failed`.
//!
//! Needs root (namespaces, eBPF). The xtask adds the cases that run the test command as a
//! non-root user.

use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use enforcer_tests::live::{Live, Model};
use enforcer_tests::scenario::{
    model::{Expect, Scenario},
    parse::parse_scenario,
    report::Outcome,
};

const TOPOLOGY: &str = "name: selftest
workloads:
  - {name: web-0, service: web, addresses: [10.10.1.10]}
  - {name: api-0, service: api, addresses: [10.10.2.10]}
steps:
";

/// A deny policy for api on TCP 8080, and a probe that it denies.
const DENY: &str = "  - apply:
      - apiVersion: enforcer/v1
        kind: FlowPolicy
        metadata: {name: api-deny}
        spec: {service: api, ingressDeny: [{from: [{service: web}], ports: [{port: 8080}]}]}
    probes:
      - {from: web-0, to: api-0, protocol: TCP, port: 8080, expect: deny}
";

/// No policy at all: the probe should be answered; with its server killed it is not.
const NO_POLICY: &str = "  - probes:
      - {from: web-0, to: api-0, protocol: TCP, port: 8080, expect: deny}
";

/// A limiter at `limit` packets per second; the probe states that 100 a second get through.
fn rate_step(limit: u32) -> String {
    format!(
        "  - apply:
      - apiVersion: enforcer/v1
        kind: FlowPolicy
        metadata: {{name: api-limit}}
        spec:
          service: api
          ingress:
            - from: [{{service: web}}]
              ports: [{{protocol: UDP, port: 5353}}]
              rateLimit: {{packetsPerSecond: {limit}, burst: 10}}
    probes:
      - {{from: web-0, to: api-0, protocol: UDP, port: 5353, packets: 800, ratePerSecond: 800, admittedPerSecond: 100, expect: rate_limited}}
"
    )
}

/// Run the single step of `steps` live (killing the echo servers on port 8080 of api-0 first if
/// `kill_server`) and return the outcome of its one probe.
fn run_case(steps: &str, kill_server: bool) -> Result<(Outcome, String)> {
    let text = format!("{TOPOLOGY}{steps}");
    let scenario: Scenario =
        parse_scenario("selftest.yaml", &text).map_err(|e| anyhow!("selftest scenario: {e}"))?;
    let mut live = Live::start(&scenario)?;
    let mut model = Model::new(&scenario)?;
    let step = scenario.steps.first().context("no step")?;
    live.apply_step("selftest.yaml", step)?;
    model.step(step);
    if kill_server {
        let ns = live.topo.pod_netns("api-0")?.to_string();
        live.sabotage_kill_servers(&ns, 8080)?;
    }
    let probe = step.probes.first().context("no probe")?;
    live.run_probe(&scenario, probe, &model)
}

/// Judges a case's outcome: `Ok` when the guard did its job.
type Check = Box<dyn Fn(&Outcome, &str) -> Result<()>>;

fn expect_verdict(want: Expect) -> impl Fn(&Outcome, &str) -> Result<()> {
    move |got, detail| match got {
        Outcome::Verdict(v) if *v == want => Ok(()),
        _ => bail!("expected {want}, got {got} ({detail})"),
    }
}

fn expect_error(needle: &'static str) -> impl Fn(&Outcome, &str) -> Result<()> {
    move |got, detail| match got {
        Outcome::Error(e) if e.contains(needle) => Ok(()),
        _ => bail!("expected an error saying {needle:?}, got {got} ({detail})"),
    }
}

fn main() -> ExitCode {
    if !enforcer_tests::is_root() {
        eprintln!("selftest needs root (network namespaces, eBPF)");
        return ExitCode::from(2);
    }
    let _ = enforcer_tests::netns::cleanup_orphans();
    let cases: Vec<(&str, String, bool, Check)> = vec![
        (
            "control: a policy drop passes a deny probe",
            DENY.into(),
            false,
            Box::new(expect_verdict(Expect::Deny)),
        ),
        (
            "echo server on the probe's port killed: the deny probe fails with \"no drop evidence\"",
            NO_POLICY.into(),
            true,
            Box::new(expect_error("no drop evidence")),
        ),
        (
            "control: a limiter at the stated rate passes its rate_limited probe",
            rate_step(100),
            false,
            Box::new(expect_verdict(Expect::RateLimited)),
        ),
        (
            "limiter at twice the stated rate: the rate_limited probe fails",
            rate_step(200),
            false,
            Box::new(expect_error("at the receiver, expected 100/s")),
        ),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, steps, kill, check) in cases {
        let result = run_case(&steps, kill).and_then(|(got, detail)| {
            check(&got, &detail)?;
            Ok(format!("{got}"))
        });
        match result {
            Ok(got) => {
                passed += 1;
                println!("PASS  {name}  (got {got})");
            }
            Err(e) => {
                failed += 1;
                println!("FAIL  {name}: {e:#}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
