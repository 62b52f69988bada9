//! `cargo xtask scenario [--offline] FILE...`: run scenario files live (netns pods, a real agent
//! per node, real traffic) or offline (the policy engine alone). One line per probe, a final
//! `N passed, M failed`, exit 1 on any mismatch. Live runs also evaluate every probe offline and
//! report any probe where the two modes disagree.

use std::{path::PathBuf, process::ExitCode};

use enforcer::scenario::{offline, report::Report};

fn main() -> ExitCode {
    let mut offline_only = false;
    let mut files = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--offline" => offline_only = true,
            "-h" | "--help" => {
                println!("usage: scenario [--offline] FILE...");
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
