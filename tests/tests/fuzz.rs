//! A short packet-fuzzing run (the long one is `cargo xtask fuzz`): random and mutated frames
//! through every program, no frame the policy denies passes, every run gives a verdict.

#[test]
fn short_fuzz_run_passes_no_denied_frame() -> anyhow::Result<()> {
    if enforcer_tests::skip_unless_root() {
        return Ok(());
    }
    let report = enforcer_tests::fuzz::run(40_000, 0x5eed)?;
    for p in &report.programs {
        eprintln!("{p:?}");
        assert!(
            p.passed > 0,
            "{}: nothing passed: the run judged nothing",
            p.name
        );
        assert!(p.runs > p.passed + p.refused, "{}: nothing dropped", p.name);
    }
    assert_eq!(report.wrong(), 0, "wrong verdicts: {:#?}", report.examples);
    Ok(())
}
