//! The output of a scenario run, shared by the offline runner ([`super::offline`]) and the live
//! runner: one line per probe as it is judged, then a final `N passed, M failed` line.
//!
//! ```text
//! == tests/scenarios/04-allow-by-service.yaml: web can reach api
//! PASS  tests/scenarios/04-allow-by-service.yaml:21  web-0 -> api-0 TCP/8080 ipv4  expect=allow got=allow  (allowed by ingress[0] of policy api-ingress)
//! FAIL  tests/scenarios/04-allow-by-service.yaml:22  ext -> api-0 ICMP ipv4  expect=allow got=deny  (default deny of isolated service api (ingress))
//! 1 passed, 1 failed
//! ```
//!
//! Errors that are not probes (a file that cannot be read or parsed, a step whose documents are
//! rejected) are printed as they are (`file:line: reason`) and each counts as one failure.
//! Two reports of the same files (offline and live) can be compared probe by probe with
//! [`Report::compare`].

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;

use super::model::{Expect, Family, Probe};
use enforcer_policy::Protocol;

/// What a probe observed (live) or computed (offline).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// allow, deny, audit or `rate_limited`.
    Verdict(Expect),
    /// The probe could not be run or judged (e.g. a live probe's socket error); always a failure.
    Error(String),
}

impl Outcome {
    /// The verdict, if the probe ran.
    pub fn verdict(&self) -> Option<Expect> {
        match self {
            Outcome::Verdict(v) => Some(*v),
            Outcome::Error(_) => None,
        }
    }
}

impl From<Expect> for Outcome {
    fn from(v: Expect) -> Outcome {
        Outcome::Verdict(v)
    }
}

impl fmt::Display for Outcome {
    /// `allow`, `deny`, `audit`, `rate_limited` or `error: REASON`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Verdict(v) => write!(f, "{v}"),
            Outcome::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// Identifies a probe across runs of the same file: file, line and step index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeKey {
    pub file: String,
    pub line: usize,
    pub step: usize,
}

impl fmt::Display for ProbeKey {
    /// `file:line`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// The scenario file (as given on the command line).
    pub file: String,
    /// 1-based line of the probe in `file`.
    pub line: usize,
    /// 0-based index of the step the probe belongs to.
    pub step: usize,
    pub from: String,
    pub to: String,
    pub protocol: Protocol,
    /// `None` for ICMP.
    pub port: Option<u16>,
    pub family: Family,
    pub expect: Expect,
    pub got: Outcome,
    /// Free text: the deciding policy and rule, addresses, timings...
    pub detail: String,
}

impl ProbeResult {
    /// The result of `probe` (of step `step` of `file`).
    pub fn new(
        file: &str,
        step: usize,
        probe: &Probe,
        got: impl Into<Outcome>,
        detail: impl Into<String>,
    ) -> ProbeResult {
        ProbeResult {
            file: file.to_string(),
            line: probe.line,
            step,
            from: probe.from.clone(),
            to: probe.to.clone(),
            protocol: probe.protocol,
            port: probe.port,
            family: probe.family,
            expect: probe.expect,
            got: got.into(),
            detail: detail.into(),
        }
    }

    /// Whether the outcome is the expected one.
    pub fn passed(&self) -> bool {
        self.got == Outcome::Verdict(self.expect)
    }

    pub fn key(&self) -> ProbeKey {
        ProbeKey {
            file: self.file.clone(),
            line: self.line,
            step: self.step,
        }
    }

    /// `web-0 -> api-0 TCP/8080 ipv4` (`ICMP` has no port).
    pub fn flow(&self) -> String {
        let port = self.port.map(|p| format!("/{p}")).unwrap_or_default();
        format!(
            "{} -> {} {}{port} {}",
            self.from, self.to, self.protocol, self.family
        )
    }
}

impl fmt::Display for ProbeResult {
    /// `PASS  file:line  web-0 -> api-0 TCP/8080 ipv4  expect=allow got=allow  (detail)`; the
    /// detail (with its parentheses) is left out when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.passed() { "PASS" } else { "FAIL" };
        write!(
            f,
            "{status}  {}:{}  {}  expect={} got={}",
            self.file,
            self.line,
            self.flow(),
            self.expect,
            self.got
        )?;
        if !self.detail.is_empty() {
            write!(f, "  ({})", self.detail)?;
        }
        Ok(())
    }
}

/// A probe whose outcome differs between two reports (or is missing from one of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    pub key: ProbeKey,
    /// The probe's flow (`web-0 -> api-0 TCP/8080 ipv4`).
    pub flow: String,
    /// The outcome in the first report (`None`: the probe is not in it).
    pub left: Option<Outcome>,
    /// The outcome in the second report.
    pub right: Option<Outcome>,
}

impl fmt::Display for Disagreement {
    /// `file:line  flow  left=allow right=deny`; see [`Disagreement::describe`] for other labels.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe("left", "right"))
    }
}

impl Disagreement {
    /// `file:line  flow  LEFT=allow RIGHT=deny` (`missing` for an absent probe).
    pub fn describe(&self, left: &str, right: &str) -> String {
        let show =
            |o: &Option<Outcome>| o.as_ref().map_or("missing".to_string(), Outcome::to_string);
        format!(
            "{}  {}  {left}={} {right}={}",
            self.key,
            self.flow,
            show(&self.left),
            show(&self.right)
        )
    }
}

/// The results of a run: probes in order plus non-probe errors.
///
/// A report made with [`Report::new`] prints every line to stdout as it is added;
/// [`Report::quiet`] prints nothing (tests, or a run whose output is the comparison).
#[derive(Debug, Clone, Default)]
pub struct Report {
    results: Vec<ProbeResult>,
    errors: Vec<String>,
    print: bool,
}

impl Report {
    /// A report that prints each line to stdout as it goes.
    pub fn new() -> Report {
        Report {
            print: true,
            ..Report::default()
        }
    }

    /// A report that prints nothing.
    pub fn quiet() -> Report {
        Report::default()
    }

    /// Whether lines are printed as they are added.
    pub fn prints(&self) -> bool {
        self.print
    }

    fn emit(&self, line: &str) {
        if self.print {
            let mut out = std::io::stdout().lock();
            // A closed stdout (e.g. piped into `head`) must not abort the run.
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    /// Prints the header of a scenario: `== file: name`.
    pub fn header(&mut self, file: &str, name: &str) {
        self.emit(&format!("== {file}: {name}"));
    }

    /// Prints a line that is neither a result nor an error (progress, notes).
    pub fn note(&mut self, line: &str) {
        self.emit(line);
    }

    /// Records and prints the result of one probe.
    pub fn push(&mut self, result: ProbeResult) {
        self.emit(&result.to_string());
        self.results.push(result);
    }

    /// Records and prints an error that is not a probe (`file:line: reason`); it counts as one
    /// failure.
    pub fn error(&mut self, message: impl fmt::Display) {
        let message = message.to_string();
        self.emit(&message);
        self.errors.push(message);
    }

    /// Appends the results and errors of `other` (without printing them again).
    pub fn merge(&mut self, other: Report) {
        self.results.extend(other.results);
        self.errors.extend(other.errors);
    }

    pub fn results(&self) -> &[ProbeResult] {
        &self.results
    }

    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// Probes whose outcome was the expected one.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed()).count()
    }

    /// Probes whose outcome was not the expected one, plus errors.
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed() + self.errors.len()
    }

    /// `N passed, M failed`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }

    /// Prints the final line, `N passed, M failed`, alone on its line.
    pub fn finish(&self) {
        self.emit(&self.summary());
    }

    /// 0 iff nothing failed, else 1.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.failed() != 0)
    }

    /// The probes whose outcomes differ between `self` and `other` (two runs of the same files,
    /// e.g. offline and live), matched by file, line and step; a probe present in only one report
    /// is a disagreement too. Error outcomes never agree. Sorted by file and line.
    pub fn compare(&self, other: &Report) -> Vec<Disagreement> {
        let left = self.index();
        let right = other.index();
        let mut keys: Vec<&ProbeKey> = left.keys().chain(right.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter_map(|key| {
                let l = left.get(key);
                let r = right.get(key);
                let agree = match (l, r) {
                    (Some(l), Some(r)) => l.got.verdict().is_some() && l.got == r.got,
                    _ => false,
                };
                if agree {
                    return None;
                }
                let flow = l.or(r).map(|p| p.flow()).unwrap_or_default();
                Some(Disagreement {
                    key: key.clone(),
                    flow,
                    left: l.map(|p| p.got.clone()),
                    right: r.map(|p| p.got.clone()),
                })
            })
            .collect()
    }
}

impl Report {
    fn index(&self) -> BTreeMap<ProbeKey, &ProbeResult> {
        self.results.iter().map(|r| (r.key(), r)).collect()
    }
}

impl fmt::Display for Report {
    /// Every result and error line in order of addition (errors after results), then the summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.results {
            writeln!(f, "{r}")?;
        }
        for e in &self.errors {
            writeln!(f, "{e}")?;
        }
        write!(f, "{}", self.summary())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(line: usize, expect: Expect) -> Probe {
        Probe {
            from: "web-0".into(),
            to: "api-0".into(),
            protocol: Protocol::Tcp,
            port: Some(8080),
            expect,
            family: Family::Ipv4,
            packets: None,
            rate_per_second: None,
            admitted_per_second: None,
            line,
        }
    }

    #[test]
    fn lines_and_summary() {
        let mut report = Report::quiet();
        report.push(ProbeResult::new(
            "s.yaml",
            0,
            &probe(7, Expect::Allow),
            Expect::Allow,
            "allowed by ingress[0] of policy p",
        ));
        let mut icmp = probe(8, Expect::Deny);
        icmp.protocol = Protocol::Icmp;
        icmp.port = None;
        icmp.family = Family::Ipv6;
        report.push(ProbeResult::new("s.yaml", 1, &icmp, Expect::Allow, ""));
        report.push(ProbeResult::new(
            "s.yaml",
            1,
            &probe(9, Expect::Deny),
            Outcome::Error("no route".into()),
            "",
        ));
        assert_eq!(
            report.results()[0].to_string(),
            "PASS  s.yaml:7  web-0 -> api-0 TCP/8080 ipv4  expect=allow got=allow  (allowed by ingress[0] of policy p)"
        );
        assert_eq!(
            report.results()[1].to_string(),
            "FAIL  s.yaml:8  web-0 -> api-0 ICMP ipv6  expect=deny got=allow"
        );
        assert_eq!(
            report.results()[2].to_string(),
            "FAIL  s.yaml:9  web-0 -> api-0 TCP/8080 ipv4  expect=deny got=error: no route"
        );
        assert_eq!(report.summary(), "1 passed, 2 failed");
        assert_eq!(report.exit_code(), 1);
        report.error("s.yaml:3: bad");
        assert_eq!(report.failed(), 3);
        assert!(report
            .to_string()
            .ends_with("\ns.yaml:3: bad\n1 passed, 3 failed"));
    }

    #[test]
    fn empty_report_passes() {
        let report = Report::quiet();
        assert_eq!(report.summary(), "0 passed, 0 failed");
        assert_eq!(report.exit_code(), 0);
    }

    #[test]
    fn compare_matches_probes_by_position() {
        let mut offline = Report::quiet();
        let mut live = Report::quiet();
        for line in [5, 6, 7] {
            offline.push(ProbeResult::new(
                "s.yaml",
                0,
                &probe(line, Expect::Allow),
                Expect::Allow,
                "",
            ));
        }
        live.push(ProbeResult::new(
            "s.yaml",
            0,
            &probe(5, Expect::Allow),
            Expect::Allow,
            "1 ms",
        ));
        live.push(ProbeResult::new(
            "s.yaml",
            0,
            &probe(6, Expect::Allow),
            Expect::Deny,
            "",
        ));
        live.push(ProbeResult::new(
            "s.yaml",
            0,
            &probe(8, Expect::Allow),
            Expect::Allow,
            "",
        ));
        let diff = offline.compare(&live);
        let lines: Vec<String> = diff.iter().map(|d| d.describe("offline", "live")).collect();
        assert_eq!(
            lines,
            [
                "s.yaml:6  web-0 -> api-0 TCP/8080 ipv4  offline=allow live=deny",
                "s.yaml:7  web-0 -> api-0 TCP/8080 ipv4  offline=allow live=missing",
                "s.yaml:8  web-0 -> api-0 TCP/8080 ipv4  offline=missing live=allow",
            ]
        );
        assert!(offline.compare(&offline).is_empty());
    }

    #[test]
    fn merge_keeps_counts() {
        let mut a = Report::quiet();
        a.push(ProbeResult::new(
            "a.yaml",
            0,
            &probe(1, Expect::Allow),
            Expect::Allow,
            "",
        ));
        let mut b = Report::quiet();
        b.error("b.yaml:1: broken");
        a.merge(b);
        assert_eq!(a.summary(), "1 passed, 1 failed");
    }
}
