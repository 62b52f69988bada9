//! What `policy lint` reports: findings with a stable id, a severity, a location, the policy and
//! rule, and a one-line fix.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How serious a finding is (ordered: `Info < Warning < Error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }

    /// One step up (for findings about sensitive services), capped at `Error`.
    #[must_use]
    pub fn raised(self) -> Severity {
        match self {
            Severity::Info => Severity::Warning,
            Severity::Warning | Severity::Error => Severity::Error,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of finding. The code (`EN001`, ...) is stable: suppressions and CI name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Check {
    /// Input without workloads or pods: the checks that need them did not run.
    NoInventory,
    Shadowed,
    Redundant,
    WorldAllPorts,
    WildcardIntoSensitive,
    WideCidr,
    EgressWorldAllPorts,
    ReachableFromOutside,
    NotIsolated,
    NoDefaultDeny,
    StaleAudit,
    DenyNeverMatched,
    Unused,
    SelectsNoPod,
    PeerSelectsNoPod,
    NamedPortUnresolved,
    UnknownNamespace,
    SuppressionWithoutReason,
}

impl Check {
    pub const ALL: [Check; 18] = [
        Check::NoInventory,
        Check::Shadowed,
        Check::Redundant,
        Check::WorldAllPorts,
        Check::WildcardIntoSensitive,
        Check::WideCidr,
        Check::EgressWorldAllPorts,
        Check::ReachableFromOutside,
        Check::NotIsolated,
        Check::NoDefaultDeny,
        Check::StaleAudit,
        Check::DenyNeverMatched,
        Check::Unused,
        Check::SelectsNoPod,
        Check::PeerSelectsNoPod,
        Check::NamedPortUnresolved,
        Check::UnknownNamespace,
        Check::SuppressionWithoutReason,
    ];

    /// The stable id.
    pub fn code(self) -> &'static str {
        match self {
            Check::NoInventory => "EN000",
            Check::Shadowed => "EN001",
            Check::Redundant => "EN002",
            Check::WorldAllPorts => "EN010",
            Check::WildcardIntoSensitive => "EN011",
            Check::WideCidr => "EN012",
            Check::EgressWorldAllPorts => "EN013",
            Check::ReachableFromOutside => "EN020",
            Check::NotIsolated => "EN021",
            Check::NoDefaultDeny => "EN022",
            Check::StaleAudit => "EN030",
            Check::DenyNeverMatched => "EN031",
            Check::Unused => "EN032",
            Check::SelectsNoPod => "EN040",
            Check::PeerSelectsNoPod => "EN041",
            Check::NamedPortUnresolved => "EN042",
            Check::UnknownNamespace => "EN043",
            Check::SuppressionWithoutReason => "EN090",
        }
    }

    /// A short kebab-case name (SARIF `rule.name`).
    pub fn name(self) -> &'static str {
        match self {
            Check::NoInventory => "no-inventory",
            Check::Shadowed => "shadowed-rule",
            Check::Redundant => "redundant-rule",
            Check::WorldAllPorts => "world-all-ports",
            Check::WildcardIntoSensitive => "wildcard-into-sensitive",
            Check::WideCidr => "wide-cidr",
            Check::EgressWorldAllPorts => "egress-world-all-ports",
            Check::ReachableFromOutside => "reachable-from-outside",
            Check::NotIsolated => "not-isolated",
            Check::NoDefaultDeny => "no-default-deny",
            Check::StaleAudit => "stale-audit",
            Check::DenyNeverMatched => "deny-never-matched",
            Check::Unused => "unused-rule",
            Check::SelectsNoPod => "selects-no-pod",
            Check::PeerSelectsNoPod => "peer-selects-no-pod",
            Check::NamedPortUnresolved => "named-port-unresolved",
            Check::UnknownNamespace => "unknown-namespace",
            Check::SuppressionWithoutReason => "suppression-without-reason",
        }
    }

    /// What the check finds (SARIF `shortDescription`, docs).
    pub fn description(self) -> &'static str {
        match self {
            Check::NoInventory => {
                "no workloads or pods in the input: checks that need them skipped"
            }
            Check::Shadowed => "rule never decides any flow: other rules decide all it matches",
            Check::Redundant => "removing the rule changes no verdict",
            Check::WorldAllPorts => "ingress from the world on every port",
            Check::WildcardIntoSensitive => "any-workload peer into a sensitive service",
            Check::WideCidr => "CIDR peer wider than the allowed prefix",
            Check::EgressWorldAllPorts => "egress to the world on every port",
            Check::ReachableFromOutside => "service reachable from outside the cluster",
            Check::NotIsolated => "service not isolated: no policy restricts its ingress",
            Check::NoDefaultDeny => "namespace without a default deny",
            Check::StaleAudit => "audit-mode policy older than the limit",
            Check::DenyNeverMatched => "deny rule that never matched",
            Check::Unused => "rule that matched nothing for the limit",
            Check::SelectsNoPod => "policy selects no pod",
            Check::PeerSelectsNoPod => "peer selects no pod",
            Check::NamedPortUnresolved => "named port resolves on no pod",
            Check::UnknownNamespace => "policy for a namespace that does not exist",
            Check::SuppressionWithoutReason => "suppression comment without a reason",
        }
    }

    /// The default severity (findings about sensitive services are raised one step).
    pub fn severity(self) -> Severity {
        match self {
            Check::NoInventory
            | Check::Redundant
            | Check::ReachableFromOutside
            | Check::DenyNeverMatched => Severity::Info,
            Check::WildcardIntoSensitive => Severity::Error,
            _ => Severity::Warning,
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Where a finding is: a file and 1-based line (0: unknown).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Location {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.file.is_empty(), self.line) {
            (true, _) => f.write_str("<agent>"),
            (false, 0) => f.write_str(&self.file),
            (false, l) => write!(f, "{}:{l}", self.file),
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The stable id (`EN001`, ...).
    pub id: String,
    #[serde(skip)]
    pub check: Option<Check>,
    pub severity: Severity,
    pub location: Location,
    /// The policy (`NAME` or `NAMESPACE/NAME`), when the finding is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The rule, as `section[index]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub message: String,
    /// A one-line fix.
    pub fix: String,
    /// Whether a sensitive service is concerned (ranked first).
    pub sensitive: bool,
    /// The line of the finding's policy (a suppression may sit there too; 0: none).
    #[serde(skip)]
    pub policy_line: usize,
}

impl Finding {
    /// A finding of `check` at `location` with the check's default severity (raised when
    /// `sensitive`).
    pub fn new(check: Check, location: Location, message: String, fix: &str) -> Finding {
        Finding {
            id: check.code().to_string(),
            check: Some(check),
            severity: check.severity(),
            location,
            policy: None,
            rule: None,
            message,
            fix: fix.to_string(),
            sensitive: false,
            policy_line: 0,
        }
    }

    #[must_use]
    pub fn on(mut self, policy: Option<String>, rule: Option<String>) -> Finding {
        self.policy = policy;
        self.rule = rule;
        self
    }

    #[must_use]
    pub fn sensitive(mut self, sensitive: bool) -> Finding {
        if sensitive && !self.sensitive {
            self.sensitive = true;
            self.severity = self.severity.raised();
        }
        self
    }
}

/// Ranks findings: sensitive services first, then by severity, then by location.
pub fn rank(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        (b.sensitive, b.severity, &a.location, &a.id, &a.message).cmp(&(
            a.sensitive,
            a.severity,
            &b.location,
            &b.id,
            &b.message,
        ))
    });
}
