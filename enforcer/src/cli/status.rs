//! `enforcer status` and `enforcer stats`.

use std::path::Path;

use anyhow::Result;

use super::output::{print, Format, Table};
use crate::{
    api::{Request, Stats, Status},
    client,
};

pub fn status(socket: &Path, format: Format) -> Result<()> {
    let s: Status = client::call(socket, &Request::Status)?;
    if format == Format::Table {
        println!("version:     {}", s.version);
        println!("generation:  {}", s.generation);
        println!("uptime:      {}s", s.uptime_seconds);
        println!(
            "policy:      {} flow polic(ies), {} workload(s)",
            s.policies, s.workloads
        );
        println!("bpffs:       {}", s.bpffs);
        println!("tc attach:   {}", s.tc_attach);
        if s.not_ready.is_empty() {
            println!("ready:       yes");
        } else {
            println!("ready:       no");
            for r in &s.not_ready {
                println!("  - {r}");
            }
        }
        for w in &s.warnings {
            println!("warning:     {w}");
        }
        println!();
        let mut t = Table::new(vec!["INTERFACE", "IFINDEX", "ROLE", "PROGRAMS"]);
        for i in &s.interfaces {
            t.row(vec![
                i.name.clone(),
                i.ifindex.to_string(),
                i.role.clone(),
                i.programs.join(" "),
            ]);
        }
        print!("{}", t.render());
        println!();
        let mut t = Table::new(vec!["MAP", "ENTRIES", "CAPACITY", "USAGE"]);
        for m in &s.maps {
            #[expect(clippy::cast_precision_loss, reason = "a percentage for display")]
            let pct = m.entries as f64 * 100.0 / f64::from(m.capacity.max(1));
            t.row(vec![
                m.map.clone(),
                m.entries.to_string(),
                m.capacity.to_string(),
                format!("{pct:.1}%"),
            ]);
        }
        print!("{}", t.render());
        return Ok(());
    }
    print(format, &s, || Table::new(vec![]))
}

pub fn stats(socket: &Path, format: Format) -> Result<()> {
    let s: Stats = client::call(socket, &Request::Stats)?;
    print(format, &s, || {
        let mut t = Table::new(vec!["DIRECTION", "VERDICT", "REASON", "PACKETS"]);
        for c in &s.packets {
            t.row(vec![
                c.direction.to_string(),
                c.verdict.to_string(),
                c.reason.to_string(),
                c.packets.to_string(),
            ]);
        }
        t.row(vec![String::new(); 4]);
        t.row(vec![
            "POLICY".into(),
            "RULE".into(),
            "VERDICT".into(),
            "PACKETS".into(),
        ]);
        for r in s.rules.iter().filter(|r| r.packets > 0) {
            t.row(vec![
                r.rule.policy_label(),
                r.rule.rule_label(),
                r.verdict.to_string(),
                r.packets.to_string(),
            ]);
        }
        t
    })
}
