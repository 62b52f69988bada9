use anyhow::Result;

use super::{Config, Section};

pub fn run(cfg: &Config) -> Result<Section> {
    let _ = cfg;
    anyhow::bail!("todo")
}
