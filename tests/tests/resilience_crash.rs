//! The agent killed (SIGKILL) at random moments of applies, under traffic. The applies switch api's
//! extra port between two versions of one policy (A: TCP 9090 only, B: TCP 7070 only), so a
//! half-installed policy would show as a mix (both or neither). After every kill, with no agent
//! running, and again after the restart, the datapath must enforce A or B in full; once the
//! apply is re-sent (as a controller would), the agent converges to it. Meanwhile a denied port
//! is attacked non-stop (no connection may get through: no enforcement gap), and untouched pairs
//! carry a TCP stream and UDP datagrams (none may break or be lost).
//!
//! `ENFORCER_RESIL_CRASHES` sets the number of kills (5 by default; `cargo xtask soak` runs 50).

mod resil_common;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use enforcer::api::Request;
use resil_common::Fixture;

fn extra_port_policy(port: u16) -> String {
    format!(
        r"
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {{name: api-extra}}
spec:
  service: api
  ingress:
    - from: [{{service: web}}]
      ports: [{{protocol: TCP, port: {port}}}]
"
    )
}

const PORT_A: u16 = 9090;
const PORT_B: u16 = 7070;
const ATTACKED: u16 = 6060;

/// Which version the datapath enforces, from real probes of both ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enforced {
    A,
    B,
    Mix { a: bool, b: bool },
}

fn enforced(f: &Fixture) -> Result<Enforced> {
    let timeout = Duration::from_millis(600);
    Ok(
        match (f.reaches(PORT_A, timeout)?, f.reaches(PORT_B, timeout)?) {
            (true, false) => Enforced::A,
            (false, true) => Enforced::B,
            (a, b) => Enforced::Mix { a, b },
        },
    )
}

/// A small xorshift generator: the kill moments, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: impl FnOnce() -> T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(default)
}

/// Kill the agent `delay` into an apply of `target`, check the datapath with no agent and after
/// the restart, re-apply and check convergence. Returns whether the apply had finished.
fn kill_during_apply(f: &mut Fixture, i: usize, delay: Duration) -> Result<bool> {
    let (target, port) = if i.is_multiple_of(2) {
        (Enforced::B, PORT_B)
    } else {
        (Enforced::A, PORT_A)
    };
    let yaml = extra_port_policy(port);
    let socket = f.agent.socket.clone();
    let request = Request::Apply {
        source: "extra.yaml".into(),
        yaml: yaml.clone(),
        dry_run: false,
    };
    let apply = std::thread::spawn(move || {
        enforcer::client::call::<enforcer::api::ApplyResult>(&socket, &request)
    });
    std::thread::sleep(delay);
    f.agent.kill()?;
    let finished = apply.join().is_ok_and(|r| r.is_ok());
    let dead = enforced(f)?;
    f.agent.restart(&f.topo, &[])?;
    let restarted = enforced(f)?;
    let wanted = if finished {
        vec![target]
    } else {
        vec![Enforced::A, Enforced::B]
    };
    if !wanted.contains(&dead) || !wanted.contains(&restarted) {
        bail!(
            "kill {i} ({delay:?} into the apply, apply finished: {finished}): no agent → \
             {dead:?}, restarted → {restarted:?}, expected one of {wanted:?}"
        );
    }
    // The controller re-sends its desired state: the agent converges to it.
    f.agent.apply("extra.yaml", &yaml)?;
    let converged = enforced(f)?;
    if converged != target {
        bail!("kill {i}: after re-applying, {converged:?} instead of {target:?}");
    }
    println!(
        "kill {i}: {delay:?} into the apply (finished: {finished}); no agent: {dead:?}, \
         restarted: {restarted:?}"
    );
    Ok(finished)
}

#[test]
fn sigkill_during_applies_never_leaves_a_mix_or_a_gap() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let crashes: usize = env_or("ENFORCER_RESIL_CRASHES", || 5);
    let seed: u64 = env_or("ENFORCER_RESIL_SEED", || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::from(d.subsec_nanos()) | 1)
    });
    let mut rng = Rng(seed);
    let mut f = Fixture::new("crash", &[PORT_A, PORT_B, ATTACKED])?;
    let t = Instant::now();
    f.agent.apply("extra.yaml", &extra_port_policy(PORT_A))?;
    // Kill moments spread over twice an apply's duration: before, during and after the flip.
    let apply_ms = u64::try_from(t.elapsed().as_millis()).map_or(u64::MAX, |ms| ms.max(1));
    assert_eq!(enforced(&f)?, Enforced::A);
    let stream = f.stream()?;
    let udp = f.datagrams();
    let attacker = f.prober(ATTACKED, Duration::from_millis(200));
    let started = Instant::now();
    let mut finished = 0;
    for i in 0..crashes {
        let delay = Duration::from_millis(rng.below(2 * apply_ms));
        finished += usize::from(kill_during_apply(&mut f, i, delay)?);
    }
    let attacks = attacker.stop();
    let leaked = attacks.iter().filter(|p| p.answered).count();
    let datagrams = udp.stop();
    let lost = datagrams.iter().filter(|p| !p.answered).count();
    let report = stream.stop();
    println!(
        "crashes={crashes} seed={seed} apply_ms={apply_ms} applies_finished_before_kill={finished} \
         attacks={} leaked={leaked} udp_sent={} udp_lost={lost} tcp_round_trips={} \
         tcp_broken={} seconds={:.0}",
        attacks.len(),
        datagrams.len(),
        report.round_trips,
        report.error.is_some(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        attacks.len() > crashes,
        "the denied port was attacked throughout"
    );
    assert_eq!(leaked, 0, "denied connections got through");
    assert_eq!(lost, 0, "untouched UDP datagrams lost");
    assert!(
        report.error.is_none(),
        "untouched TCP connection broke: {:?}",
        report.error
    );
    Ok(())
}
