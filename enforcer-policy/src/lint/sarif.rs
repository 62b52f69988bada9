//! SARIF 2.1.0 (the OASIS Static Analysis Results Interchange Format) of the findings, the
//! format code hosts read to show findings inline on a pull request.

use serde::{Deserialize, Serialize};

use super::{Check, Finding, Severity};

pub const VERSION: &str = "2.1.0";
pub const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

#[derive(Debug, Serialize, Deserialize)]
pub struct Log {
    #[serde(rename = "$schema")]
    pub schema: String,
    pub version: String,
    pub runs: Vec<Run>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Run {
    pub tool: Tool,
    pub results: Vec<SarifResult>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Tool {
    pub driver: Driver,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Driver {
    pub name: String,
    pub version: String,
    pub rules: Vec<ReportingDescriptor>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportingDescriptor {
    pub id: String,
    pub name: String,
    pub short_description: Message,
    pub default_configuration: Configuration,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Configuration {
    pub level: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Message {
    pub text: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SarifResult {
    pub rule_id: String,
    pub rule_index: usize,
    pub level: String,
    pub message: Message,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<ResultLocation>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultLocation {
    pub physical_location: PhysicalLocation,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhysicalLocation {
    pub artifact_location: ArtifactLocation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ArtifactLocation {
    pub uri: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Region {
    pub start_line: usize,
}

/// SARIF's `level` of a severity.
pub fn level(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    }
}

/// The SARIF log of `findings`.
pub fn log(findings: &[Finding]) -> Log {
    let rules = Check::ALL
        .iter()
        .map(|c| ReportingDescriptor {
            id: c.code().into(),
            name: c.name().into(),
            short_description: Message {
                text: c.description().into(),
            },
            default_configuration: Configuration {
                level: level(c.severity()).into(),
            },
        })
        .collect();
    let results = findings
        .iter()
        .map(|f| SarifResult {
            rule_id: f.id.clone(),
            rule_index: Check::ALL
                .iter()
                .position(|c| c.code() == f.id)
                .unwrap_or(0),
            level: level(f.severity).into(),
            message: Message {
                text: format!("{} Fix: {}", text(f), f.fix),
            },
            locations: location(f),
        })
        .collect();
    Log {
        schema: SCHEMA.into(),
        version: VERSION.into(),
        runs: vec![Run {
            tool: Tool {
                driver: Driver {
                    name: "enforcer".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    rules,
                },
            },
            results,
        }],
    }
}

fn text(f: &Finding) -> String {
    match (&f.policy, &f.rule) {
        (Some(p), Some(r)) => format!("{p} {r}: {}", f.message),
        (Some(p), None) => format!("{p}: {}", f.message),
        _ => f.message.clone(),
    }
}

fn location(f: &Finding) -> Vec<ResultLocation> {
    if f.location.file.is_empty() {
        return Vec::new();
    }
    vec![ResultLocation {
        physical_location: PhysicalLocation {
            artifact_location: ArtifactLocation {
                uri: f.location.file.clone(),
            },
            region: (f.location.line > 0).then_some(Region {
                start_line: f.location.line,
            }),
        },
    }]
}
