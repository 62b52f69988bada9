//! `cargo xtask soak`: the long forms of the resilience tests (the short forms run in
//! `cargo test`), each writing its section of RELIABILITY.md from the figures it printed.

use anyhow::Result;

use crate::reliability::{now, run_for_figures, table, write_section};
use crate::setup;
use crate::util::{banner, cargo};

/// Run the parts whose count is not 0: `updates` policy updates under traffic, `crashes` agent
/// kills during applies, and `minutes` of churn + updates + traffic with resources sampled.
pub fn soak(updates: usize, crashes: usize, minutes: u64) -> Result<()> {
    setup::setup()?;
    if updates > 0 {
        soak_updates(updates)?;
    }
    if crashes > 0 {
        soak_crashes(crashes)?;
    }
    if minutes > 0 {
        soak_long(minutes)?;
    }
    Ok(())
}

fn soak_updates(updates: usize) -> Result<()> {
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
    )
}

fn soak_crashes(crashes: usize) -> Result<()> {
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
    )
}

fn soak_long(minutes: u64) -> Result<()> {
    banner(&format!(
        "soak: {minutes} minutes of pod churn, policy updates and traffic"
    ));
    let figures = run_for_figures(
        test("resilience_soak").env("ENFORCER_SOAK_SECONDS", (minutes * 60).to_string()),
        "soak",
    )?;
    write_section(
        "soak",
        &format!(
            "### Long run: churn, updates and traffic together\n\nMeasured by `cargo xtask soak \
             --minutes {minutes}` on {} (test `churn_updates_and_traffic_leave_resources_flat`, \
             tests/tests/resilience_soak.rs). Each round creates a pod on a recycled address \
             (alternately of service `web`, allowed to api:8080, and `intruder`, allowed \
             nothing), probes it and deletes it with its Workload, then allows and denies web → \
             api:9090, each checked by a probe; web → api TCP 8080 (one streaming connection) \
             and UDP 5353 flow all the time and are never touched. After a round, every few \
             seconds, the agent's RSS (`VmRSS`), its open file descriptors (`/proc/PID/fd`) and \
             the entries of its maps (`status`; `CONNTRACK` and `RATE_BUCKETS` by `bpftool map \
             dump`) are sampled: `_first` after the first round, `_last` at the end, \
             `_per_hour` the least-squares slope over all samples. `wrong_verdicts`: probes \
             whose answer was not that of the policy in force.\n\n{}",
            now(),
            table(&figures)
        ),
    )
}

fn test(name: &str) -> std::process::Command {
    let mut cmd = cargo();
    cmd.args(["test", "-p", "enforcer-tests", "--test", name])
        .args(["--", "--test-threads=1", "--nocapture"]);
    cmd
}
