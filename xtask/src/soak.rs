//! `cargo xtask soak`: the long forms of the resilience tests (the short forms run in
//! `cargo test`), each writing its section of RELIABILITY.md from the figures it printed.

use anyhow::Result;

use crate::reliability::{now, run_for_figures, table, write_section};
use crate::setup;
use crate::util::{banner, cargo};

pub fn soak(updates: usize, crashes: usize) -> Result<()> {
    setup::setup()?;
    banner(&format!("soak: {updates} policy updates under traffic"));
    let figures = run_for_figures(
        test("resilience_updates").env("ENFORCER_RESIL_UPDATES", updates.to_string()),
        "updates",
    )?;
    write_section(
        "updates",
        &format!(
            "### Hot policy updates under traffic\n\nMeasured by `cargo xtask soak --updates \
             {updates}` on {} (test `hot_updates_under_traffic_never_give_a_wrong_verdict`, \
             tests/tests/resilience_updates.rs). web → api TCP 9090 allowed and denied in turn \
             while probed non-stop; web → api TCP 8080 (one streaming connection) and UDP 5353 \
             (a datagram every few ms) are never touched. `wrong_events`: flow events of the \
             toggled pair whose verdict is not that of the generation they carry. \
             `wrong_probes`: probes that ran inside one generation's window with another \
             verdict.\n\n{}",
            now(),
            table(&figures)
        ),
    )?;
    banner(&format!("soak: {crashes} agent SIGKILLs during applies"));
    let figures = run_for_figures(
        test("resilience_crash").env("ENFORCER_RESIL_CRASHES", crashes.to_string()),
        "crashes",
    )?;
    write_section(
        "crashes",
        &format!(
            "### Agent killed during applies\n\nMeasured by `cargo xtask soak --crashes \
             {crashes}` on {} (test `sigkill_during_applies_never_leaves_a_mix_or_a_gap`, \
             tests/tests/resilience_crash.rs). SIGKILL at a random moment within twice an \
             apply's duration, switching between two versions of a policy; after each kill \
             (no agent) and after the restart the datapath enforced one version in full (a mix \
             fails the test), and converged once the apply was re-sent. `leaked`: connections \
             to a denied port that got through during the whole run.\n\n{}",
            now(),
            table(&figures)
        ),
    )?;
    Ok(())
}

fn test(name: &str) -> std::process::Command {
    let mut cmd = cargo();
    cmd.args(["test", "-p", "enforcer-tests", "--test", name])
        .args(["--", "--test-threads=1", "--nocapture"]);
    cmd
}
