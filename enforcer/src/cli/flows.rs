//! `enforcer flows [--follow] [--verdict ...] [--service ...] [-o json]`, like `hubble observe`.

use std::path::Path;

use anyhow::Result;
use enforcer_common::Verdict;

use super::output::{utc, Format};
use crate::{
    api::{FlowEvent, Request},
    client,
};

pub struct FlowsArgs {
    pub follow: bool,
    pub verdict: Option<Verdict>,
    pub service: Option<String>,
    pub last: Option<usize>,
    pub format: Format,
}

/// The UTC time of day of a Unix time in milliseconds, `HH:MM:SS.mmm`.
fn clock(ms: u64) -> String {
    utc(ms).strftime("%H:%M:%S%.3f").to_string()
}

/// `--verdict`: one of the names of [`Verdict`] (`allowed`, `denied`, `audit`).
pub fn verdict_arg() -> impl clap::builder::TypedValueParser<Value = Verdict> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Verdict::NAMES)
        .try_map(|name| Verdict::from_name(&name).ok_or("not a verdict"))
}

fn line(e: &FlowEvent) -> String {
    let by = e.rule.as_ref().map_or_else(String::new, |r| {
        format!(" by {} {}", r.policy_label(), r.rule_label())
    });
    let time = clock(e.time_ms);
    format!(
        "{time} {}:{} ({}) -> {}:{} ({}) {} {} {} {}{by} on {}",
        e.src,
        e.sport,
        e.src_identity,
        e.dst,
        e.dport,
        e.dst_identity,
        e.protocol_name(),
        e.direction,
        e.verdict.as_str().to_uppercase(),
        e.reason_name(),
        e.interface
    )
}

fn show(e: &FlowEvent, format: Format) {
    match format {
        Format::Json => println!("{}", serde_json::to_string(e).unwrap_or_default()),
        Format::Yaml => print!("---\n{}", serde_yaml_ng::to_string(e).unwrap_or_default()),
        Format::Table => println!("{}", line(e)),
    }
}

pub fn flows(socket: &Path, a: FlowsArgs) -> Result<()> {
    let history: Vec<FlowEvent> = client::call(
        socket,
        &Request::Flows {
            follow: false,
            verdict: a.verdict,
            service: a.service.clone(),
            limit: a.last,
        },
    )?;
    for e in &history {
        show(e, a.format);
    }
    if a.follow {
        client::stream(
            socket,
            &Request::Flows {
                follow: true,
                verdict: a.verdict,
                service: a.service,
                limit: None,
            },
            |e: FlowEvent| {
                show(&e, a.format);
                true
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::clock;

    #[test]
    fn clock_is_the_utc_time_of_day_to_the_millisecond() {
        assert_eq!(clock(0), "00:00:00.000");
        assert_eq!(clock(1_709_251_199_007), "23:59:59.007");
        assert_eq!(clock(86_400_000 + 3_723_450), "01:02:03.450");
    }
}
