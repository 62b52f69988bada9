//! `cargo xtask scenario [--offline] FILE...`: run scenario files live (netns pods, a real agent
//! per node, real traffic) or offline (the policy engine alone). One line per probe, a final
//! `N passed, M failed`, exit 1 on any mismatch. Live runs also evaluate every probe offline and
//! report any probe where the two modes disagree.
//!
//! `scenario --clean-orphans` deletes the harness namespaces whose owning process is dead (what
//! an aborted run left behind) and leaves those of running tests alone; `cargo xtask test` uses
//! it.

use std::{path::PathBuf, process::ExitCode};

use enforcer_tests::scenario::{offline, report::Report};

fn main() -> ExitCode {
    let mut offline_only = false;
    let mut files = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--offline" => offline_only = true,
            "--clean-orphans" => return clean_orphans(),
            "-h" | "--help" => {
                println!("usage: scenario [--offline] FILE... | scenario --clean-orphans");
                return ExitCode::SUCCESS;
            }
            _ => files.push(PathBuf::from(arg)),
        }
    }
    if files.is_empty() {
        eprintln!("usage: scenario [--offline] FILE...");
        return ExitCode::from(2);
    }
    if offline_only {
        let report = offline::run_files_offline(&files);
        return if report.exit_code() == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    if !enforcer_tests::is_root() {
        eprintln!("live scenarios need root (network namespaces, eBPF)");
        return ExitCode::from(2);
    }
    let _ = enforcer_tests::netns::cleanup_orphans();
    let mut report = Report::new();
    for f in &files {
        if let Err(e) = enforcer_tests::live::run_file(f, &mut report) {
            report.error(format!("{}: {e:#}", f.display()));
        }
    }
    // The two modes must agree on every probe.
    let mut offline_report = Report::quiet();
    offline::run_files_offline_into(&files, &mut offline_report);
    let disagreements = report.compare(&offline_report);
    for d in &disagreements {
        report.note(&d.describe("live", "offline"));
    }
    if !disagreements.is_empty() {
        report.error(format!(
            "{} probe(s) where live and offline disagree",
            disagreements.len()
        ));
    }
    report.finish();
    if report.exit_code() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Delete the namespaces of dead harness processes, naming each.
fn clean_orphans() -> ExitCode {
    match enforcer_tests::netns::cleanup_orphans() {
        Ok(deleted) if deleted.is_empty() => {
            println!("no orphaned namespaces");
            ExitCode::SUCCESS
        }
        Ok(deleted) => {
            println!("deleted orphaned namespaces: {}", deleted.join(" "));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cleaning orphaned namespaces: {e:#}");
            ExitCode::FAILURE
        }
    }
}
