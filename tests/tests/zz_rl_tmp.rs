#[test]
fn measure_table() {
    let rows =
        enforcer_tests::ratelimit_bench::measure(&[100, 1_000, 10_000, 100_000]).expect("measure");
    for r in &rows {
        eprintln!("{r:?}");
    }
    eprintln!("{}", enforcer_tests::ratelimit_bench::render(&rows));
}
