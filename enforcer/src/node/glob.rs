//! Which interfaces are the pods' host-side ends: comma-separated shell globs (`ep*`,
//! `cali*,lxc*`), matched with `globset` (`*`, `?`, `[abc]`; a comma always separates globs).

use std::{fmt, str::FromStr};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Deserializer};

/// A glob of `--interfaces` that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("bad interface glob {glob:?}: {source}")]
pub struct BadGlob {
    glob: String,
    source: globset::Error,
}

/// The globs of `--interfaces`, compiled once.
#[derive(Clone, Debug)]
pub struct InterfaceGlobs {
    spec: String,
    set: GlobSet,
}

impl InterfaceGlobs {
    /// Whether interface `name` matches one of the globs.
    pub fn matches(&self, name: &str) -> bool {
        self.set.is_match(name)
    }
}

impl FromStr for InterfaceGlobs {
    type Err = BadGlob;

    fn from_str(spec: &str) -> Result<Self, BadGlob> {
        let mut set = GlobSetBuilder::new();
        for glob in spec.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            let bad = |source| BadGlob {
                glob: glob.to_string(),
                source,
            };
            set.add(Glob::new(glob).map_err(bad)?);
        }
        let set = set.build().map_err(|source| BadGlob {
            glob: spec.to_string(),
            source,
        })?;
        Ok(InterfaceGlobs {
            spec: spec.to_string(),
            set,
        })
    }
}

impl fmt::Display for InterfaceGlobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

impl<'de> Deserialize<'de> for InterfaceGlobs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::InterfaceGlobs;

    fn globs(spec: &str) -> InterfaceGlobs {
        spec.parse().expect("globs")
    }

    #[test]
    fn shell_globs_match_whole_names() {
        assert!(globs("ep*").matches("ep1234"));
        assert!(globs("ep*").matches("ep"));
        assert!(!globs("ep*").matches("eth0"));
        assert!(globs("cali?x*").matches("cali1xyz"));
        assert!(globs("*").matches("anything"));
        assert!(!globs("veth").matches("veth0"));
        assert!(globs("cali*, lxc*").matches("lxc12"));
        assert!(!globs("").matches("ep1"));
        assert!("ep[".parse::<InterfaceGlobs>().is_err());
    }
}
