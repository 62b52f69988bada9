//! Hot policy updates under traffic. One pair (web → api TCP 9090) is allowed and denied in
//! turn, generation after generation, while a prober hammers it; other pairs (web → api TCP 8080
//! as one long-lived streaming connection, web → api UDP 5353 as a datagram every few ms) are
//! never touched by the updates. Checked:
//! - every flow event of the toggled pair at api's side has the verdict of the generation it
//!   carries (at web's side, which is not isolated, every event is an allow);
//! - every probe of the toggled pair that ran entirely inside one generation's time has that
//!   generation's verdict;
//! - the untouched TCP connection never breaks and every untouched datagram is echoed.
//!
//! `ENFORCER_RESIL_UPDATES` sets the number of updates (40 by default; `cargo xtask soak` runs
//! 1 000).

mod resil_common;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Result};
use enforcer::api::{FlowEvent, Request};
use enforcer_common::{Direction, Verdict};
use enforcer_tests::cluster::AgentProcess;
use resil_common::{Fixture, Probe, Prober};

const TOGGLE: &str = r"
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: api-toggle}
spec:
  service: api
  ingress:
    - from: [{service: web}]
      ports: [{protocol: TCP, port: 9090}]
";

const TOGGLED_PORT: u16 = 9090;

/// Collects the flow events of one destination port from `flows --follow`.
fn follow_events(agent: &AgentProcess, dport: u16) -> Arc<Mutex<Vec<FlowEvent>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let (sink, socket) = (events.clone(), agent.socket.clone());
    std::thread::spawn(move || {
        let request = Request::Flows {
            follow: true,
            verdict: None,
            service: None,
            limit: None,
        };
        let _ = enforcer::client::stream(&socket, &request, |e: FlowEvent| {
            if e.dport == dport {
                sink.lock().expect("events").push(e);
            }
            true
        });
    });
    events
}

/// Waits until the followed stream holds the newest event of the toggled port that the agent's
/// history holds (both are fed together; the probes have stopped, so nothing newer comes).
fn caught_up(agent: &AgentProcess, followed: &Mutex<Vec<FlowEvent>>) -> Result<()> {
    let history: Vec<FlowEvent> = agent.call(&Request::Flows {
        follow: false,
        verdict: None,
        service: None,
        limit: None,
    })?;
    let Some(newest) = history.iter().rev().find(|e| e.dport == TOGGLED_PORT) else {
        bail!("the agent reported no event of the toggled port");
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !followed.lock().expect("events").contains(newest) {
        ensure!(
            Instant::now() < deadline,
            "flows --follow did not deliver the newest event within 10 s: {newest:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// When each generation was in force (from the end of its apply to the start of the next) and
/// whether it allows the toggled pair.
struct Generations {
    allowed: BTreeMap<u64, bool>,
    windows: Vec<(Instant, Instant, bool)>,
}

/// Allow and deny the toggled pair in turn, `updates` times; each generation stays in force
/// until `prober` completed two probes in it (so at least one ran entirely inside it).
fn toggle(agent: &AgentProcess, prober: &Prober, updates: usize) -> Result<Generations> {
    let mut gens = Generations {
        allowed: BTreeMap::from([(agent.status()?.generation, false)]),
        windows: Vec::new(),
    };
    let mut since = Instant::now();
    let mut allowed = false;
    for i in 0..updates {
        gens.windows.push((since, Instant::now(), allowed));
        allowed = i.is_multiple_of(2);
        let result = if allowed {
            agent.apply("toggle.yaml", TOGGLE)?
        } else {
            agent.delete("api-toggle")?
        };
        gens.allowed.insert(result.generation, allowed);
        since = Instant::now();
        let completed = prober.completed();
        let deadline = since + Duration::from_secs(10);
        while prober.completed() < completed + 2 {
            ensure!(Instant::now() < deadline, "no probe completed within 10 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    gens.windows.push((since, Instant::now(), allowed));
    Ok(gens)
}

/// Events whose verdict is not the one their generation gives: at web's side (egress, web is
/// not isolated) every event is an allow; at api's side (ingress) the generation decides.
fn wrong_events<'a>(gens: &Generations, events: &'a [FlowEvent]) -> Vec<&'a FlowEvent> {
    events
        .iter()
        .filter(|e| {
            let expected = if e.direction == Direction::Egress {
                Some(&true)
            } else {
                gens.allowed.get(&e.generation)
            };
            expected != Some(&(e.verdict == Verdict::Allow))
        })
        .collect()
}

/// Probes that ran entirely inside one generation's window, with that window's verdict.
fn judged<'a>(gens: &Generations, probes: &'a [Probe]) -> Vec<(&'a Probe, bool)> {
    probes
        .iter()
        .filter_map(|p| {
            gens.windows
                .iter()
                .find(|(from, to, _)| p.start >= *from && p.end <= *to)
                .map(|(_, _, allowed)| (p, *allowed))
        })
        .collect()
}

#[test]
fn hot_updates_under_traffic_never_give_a_wrong_verdict() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let updates: usize = std::env::var("ENFORCER_RESIL_UPDATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let f = Fixture::new("hot-updates", &[TOGGLED_PORT])?;
    let events = follow_events(&f.agent, TOGGLED_PORT);
    let stream = f.stream()?;
    let udp = f.datagrams();
    let toggled = f.prober(TOGGLED_PORT, Duration::from_millis(300));
    let gens = toggle(&f.agent, &toggled, updates)?;
    let probes = toggled.stop();
    let datagrams = udp.stop();
    caught_up(&f.agent, &events)?;
    let report = stream.stop();

    let events = events.lock().expect("events").clone();
    let wrong_events = wrong_events(&gens, &events);
    let at_api = |verdict: Verdict| {
        events
            .iter()
            .filter(|e| e.direction == Direction::Ingress && e.verdict == verdict)
            .count()
    };
    let (api_allowed, api_denied) = (at_api(Verdict::Allow), at_api(Verdict::Deny));
    let judged = judged(&gens, &probes);
    let wrong_probes = judged.iter().filter(|(p, a)| p.answered != *a).count();
    let lost = datagrams.iter().filter(|p| !p.answered).count();
    println!(
        "updates={updates} probes={} judged={} wrong_probes={wrong_probes} events={} \
         events_api_allowed={api_allowed} events_api_denied={api_denied} wrong_events={} \
         udp_sent={} udp_lost={lost} tcp_round_trips={} tcp_broken={}",
        probes.len(),
        judged.len(),
        events.len(),
        wrong_events.len(),
        datagrams.len(),
        report.round_trips,
        report.error.is_some(),
    );
    assert!(
        judged.len() >= updates,
        "enough probes fell inside one generation"
    );
    assert!(
        api_allowed > updates / 4 && api_denied > updates / 4,
        "both verdicts were judged at api's side"
    );
    assert!(
        wrong_events.is_empty(),
        "events with a wrong verdict: {wrong_events:?}"
    );
    assert_eq!(wrong_probes, 0, "probes with a wrong verdict");
    assert_eq!(lost, 0, "untouched UDP datagrams lost");
    assert!(
        report.error.is_none(),
        "untouched TCP connection broke: {:?}",
        report.error
    );
    Ok(())
}
