//! Datapath truth tables for the same rules as the scenarios: every probe of every scenario file
//! becomes a hand-built frame run through the real programs (`BPF_PROG_TEST_RUN`) with the
//! scenario's policy compiled into the maps — the source's egress in `from_pod`, the
//! destination's ingress in `to_pod` — and must give the scenario's expected verdict.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use enforcer::{
    datapath::Datapath,
    policy::{compile, PolicySet, Protocol},
};
use enforcer_common::{programs, VERDICT_AUDIT};
use enforcer_tests::{
    frames::{Frame, L4},
    scenario::{
        model::{Endpoint, Expect, Probe, Scenario},
        offline::{node_context, probe_flow},
        parse::parse_scenario,
    },
    testrun::{run_tc, test_endpoints, TC_PASS},
};

fn audit_packets(dp: &Datapath) -> Result<u64> {
    Ok(dp
        .counters()?
        .iter()
        .filter(|((_, v, _), _)| *v == VERDICT_AUDIT)
        .map(|(_, n)| n)
        .sum())
}

struct Runner {
    dp: Datapath,
    next_port: u16,
}

impl Runner {
    /// The verdict the datapath gives a new flow of `probe`.
    fn verdict(&mut self, scenario: &Scenario, set: &PolicySet, probe: &Probe) -> Result<Expect> {
        let (flow, node) = probe_flow(scenario, probe).map_err(|e| anyhow!(e))?;
        let ctx = node_context(scenario, node);
        let compiled = compile(set, &ctx);
        self.dp.install(&compiled, &test_endpoints(set))?;
        self.next_port = self.next_port.wrapping_add(1).max(20_000);
        let sport = self.next_port;
        let l4 = match probe.protocol {
            Protocol::Tcp => L4::Tcp {
                sport,
                dport: flow.port,
                flags: 0x02,
            },
            Protocol::Udp => L4::Udp {
                sport,
                dport: flow.port,
            },
            Protocol::Icmp => L4::Echo {
                id: sport,
                reply: false,
            },
            Protocol::Sctp => return Err(anyhow!("SCTP frames are not built")),
        };
        let frame = Frame::new(flow.src, flow.dst, l4).build();
        let is_workload =
            |name: &str| matches!(scenario.endpoint(name), Some(Endpoint::Workload(_)));
        let audit_before = audit_packets(&self.dp)?;
        // The source's egress where its packet enters the node, then the destination's ingress.
        if is_workload(&probe.from) && run_tc(&self.dp, programs::FROM_POD, &frame) != TC_PASS {
            return Ok(Expect::Deny);
        }
        if is_workload(&probe.to) && run_tc(&self.dp, programs::TO_POD, &frame) != TC_PASS {
            return Ok(Expect::Deny);
        }
        Ok(if audit_packets(&self.dp)? > audit_before {
            Expect::Audit
        } else {
            Expect::Allow
        })
    }
}

#[test]
fn every_scenario_probe_through_test_run() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut runner = Runner {
        dp: Datapath::load(None)?,
        next_port: 20_000,
    };
    let (mut checked, mut failures) = (0, Vec::new());
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        let scenario =
            parse_scenario(&file.display().to_string(), &text).map_err(|e| anyhow!("{e}"))?;
        let mut set =
            PolicySet::from_documents(scenario.workload_documents()).map_err(|e| anyhow!("{e}"))?;
        for step in &scenario.steps {
            set.apply(step.apply.clone()).map_err(|e| anyhow!("{e}"))?;
            for selector in &step.delete {
                set.delete(selector);
            }
            for probe in &step.probes {
                if probe.expect == Expect::RateLimited || probe.protocol == Protocol::Sctp {
                    continue;
                }
                let got = runner.verdict(&scenario, &set, probe)?;
                checked += 1;
                if got != probe.expect {
                    failures.push(format!(
                        "{}:{} {} -> {} {:?}/{:?} {}: expected {}, datapath says {}",
                        file.display(),
                        probe.line,
                        probe.from,
                        probe.to,
                        probe.protocol,
                        probe.port,
                        probe.family,
                        probe.expect,
                        got
                    ));
                }
            }
        }
    }
    eprintln!(
        "{checked} probes checked through BPF_PROG_TEST_RUN, {} mismatches",
        failures.len()
    );
    assert!(checked > 300, "the scenarios were read");
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
    Ok(())
}
