//! Issue 17: upgrade and downgrade with a real older agent (N-1, built from this repository's
//! history by `enforcer_tests::old_agent`) while traffic flows: N-1 → N → N-1, across a change of
//! the pinned layout (v2 ↔ v3), each switch a SIGKILL of one agent and the start of the other on
//! the same pins and state dir.
//!
//! Checked after each switch and over the whole run: the pins of the running version only; the
//! policy enforced (allowed flow answers, denied flow dropped and counted); no connection to the
//! denied port ever answered (probed all the time); the untouched TCP connection never broke and
//! no untouched datagram was lost; and no packet was passed for want of a policy (reason
//! `no_policy`, the upgrade window docs/operations.md used to warn about): every packet of the
//! streaming connection and the datagrams, which never pause, would otherwise be counted there.

mod resil_common;

use std::time::Duration;

use anyhow::{ensure, Result};
use enforcer_tests::{cluster::enforcer_bin, old_agent};
use resil_common::Fixture;

/// The port web may never reach.
const DENIED: u16 = 9090;

/// Which agent binary the next start uses (`enforcer_tests::cluster::enforcer_bin` reads it).
fn use_binary(bin: &std::path::Path) {
    std::env::set_var("ENFORCER_BIN", bin);
}

/// Packets counted with `field` = `value` (e.g. verdict denied, reason `no_policy`), read from
/// the raw `stats` answer: the older agent's rule counters predate the typed rule references the
/// current client decodes, so the typed `stats` of the harness cannot read its answer.
fn counted(f: &Fixture, field: &str, value: &str) -> Result<u64> {
    let stats: serde_json::Value = f.agent.call(&enforcer::api::Request::Stats)?;
    Ok(stats["packets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c[field] == value)
        .filter_map(|c| c["packets"].as_u64())
        .sum())
}

/// Only version `v`'s pins are left, and the datapath enforces the policy; with `fresh` (maps
/// created by this agent: a layout change), no packet was passed for want of a policy.
fn check(f: &Fixture, v: u32, what: &str, fresh: bool) -> Result<()> {
    let dirs: Vec<String> = std::fs::read_dir(&f.agent.bpffs)?
        .filter_map(Result::ok)
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .collect();
    ensure!(dirs == [format!("v{v}")], "{what}: pins {dirs:?}");
    ensure!(
        f.reaches(8080, Duration::from_secs(1))?,
        "{what}: 8080 allowed"
    );
    let before = counted(f, "verdict", "denied")?;
    ensure!(
        !f.reaches(DENIED, Duration::from_millis(700))?,
        "{what}: {DENIED} denied"
    );
    ensure!(
        counted(f, "verdict", "denied")? > before,
        "{what}: the drop is counted"
    );
    let no_policy = counted(f, "reason", "no_policy")?;
    ensure!(
        !fresh || no_policy == 0,
        "{what}: {no_policy} packets passed with no policy"
    );
    Ok(())
}

#[test]
fn upgrade_and_downgrade_across_a_layout_change_under_traffic() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    // A test that failed before may have left the old agent in ENFORCER_BIN.
    std::env::remove_var("ENFORCER_BIN");
    let current = enforcer_bin()?;
    let old = old_agent::old_agent()?;
    use_binary(&old);
    let mut f = Fixture::new("upgrade", &[DENIED])?;
    // Its first probes (before any policy) passed with no policy: not an upgrade window.
    check(&f, old_agent::OLD_LAYOUT_VERSION, "N-1", false)?;
    let stream = f.stream()?;
    let udp = f.datagrams();
    let attacks = f.prober(DENIED, Duration::from_millis(300));
    let mut trips = Vec::new();
    for (bin, v, what) in [
        (&current, enforcer_common::LAYOUT_VERSION, "N-1 → N"),
        (&old, old_agent::OLD_LAYOUT_VERSION, "N → N-1"),
    ] {
        let before = stream.round_trips();
        use_binary(bin);
        f.agent.restart(&f.topo, &[])?;
        check(&f, v, what, true)?;
        ensure!(
            stream.wait_for_round_trips(before + 20, Duration::from_secs(5)),
            "{what}: the untouched connection keeps streaming"
        );
        trips.push(stream.round_trips() - before);
    }
    use_binary(&current);
    let attacks = attacks.stop();
    let datagrams = udp.stop();
    let report = stream.stop();
    let leaked = attacks.iter().filter(|p| p.answered).count();
    let lost = datagrams.iter().filter(|p| !p.answered).count();
    println!(
        "upgrade=old_commit={} switches=2 attacks={} leaked={leaked} udp_sent={} udp_lost={lost} \
         tcp_round_trips={} tcp_broken={}",
        &old_agent::OLD_AGENT_COMMIT[..12],
        attacks.len(),
        datagrams.len(),
        report.round_trips,
        report.error.is_some()
    );
    ensure!(leaked == 0, "{leaked} connections to {DENIED} answered");
    ensure!(lost == 0, "{lost} untouched datagrams lost");
    ensure!(
        report.error.is_none(),
        "the untouched connection broke: {:?}",
        report.error
    );
    Ok(())
}

#[test]
fn an_upgrade_whose_policy_cannot_install_leaves_the_old_version_enforcing() -> Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    // A test that failed before may have left the old agent in ENFORCER_BIN.
    std::env::remove_var("ENFORCER_BIN");
    let current = enforcer_bin()?;
    let old = old_agent::old_agent()?;
    use_binary(&old);
    // Fixture::new has seen api:DENIED answer before any policy: a later silence is the policy.
    let mut f = Fixture::new("upgrade-held", &[DENIED])?;
    check(&f, old_agent::OLD_LAYOUT_VERSION, "N-1", false)?;
    // The new agent cannot know the policy: the CLI documents' state file is corrupt.
    f.agent.kill()?;
    std::fs::write(f.agent.state_dir.join("applied.yaml"), "spec: [unclosed\n")?;
    use_binary(&current);
    f.agent.restart(&f.topo, &[])?;
    // The old version's programs and maps still enforce its policy.
    ensure!(f.reaches(8080, Duration::from_secs(1))?, "8080 allowed");
    for _ in 0..3 {
        ensure!(
            !f.reaches(DENIED, Duration::from_millis(700))?,
            "{DENIED} still denied while the upgrade is held"
        );
    }
    let status = f.agent.status()?;
    ensure!(
        status.not_ready.iter().any(|r| r.contains("upgrade held")),
        "not ready, and why: {:?}",
        status.not_ready
    );
    let mut dirs: Vec<String> = std::fs::read_dir(&f.agent.bpffs)?
        .filter_map(Result::ok)
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    ensure!(
        dirs == ["v2", &format!("v{}", enforcer_common::LAYOUT_VERSION)],
        "both layouts pinned: {dirs:?}"
    );
    // Once the policy is known again, the new version takes over.
    f.agent.apply(
        "workloads.yaml",
        enforcer_tests::fixtures::WEB_API_WORKLOADS,
    )?;
    f.agent.apply("base.yaml", resil_common::BASE)?;
    // The next resync (every second) moves the links over.
    let current_dir = format!("v{}", enforcer_common::LAYOUT_VERSION);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&f.agent.bpffs)?.count() > 1 {
        ensure!(
            std::time::Instant::now() < deadline,
            "the old layout's pins are still there"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(f.agent.bpffs.join(&current_dir).is_dir());
    check(
        &f,
        enforcer_common::LAYOUT_VERSION,
        "N after the apply",
        true,
    )?;
    Ok(())
}
