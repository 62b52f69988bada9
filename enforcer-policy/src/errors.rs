//! Where documents come from, and what is wrong with them: `file:line:column: reason`.

use std::fmt;

/// Where a document was defined: file and 1-based line of its first line (`line` 0 = unknown).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Source {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.file.is_empty(), self.line) {
            (true, 0) => f.write_str("<input>"),
            (true, line) => write!(f, "<input>:{line}"),
            (false, 0) => f.write_str(&self.file),
            (false, line) => write!(f, "{}:{line}", self.file),
        }
    }
}

/// A rejected document or field: `file:line:column: reason`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
pub struct PolicyError {
    pub file: String,
    /// 1-based line of the offending node; 0 when unknown.
    pub line: usize,
    /// 1-based column of the offending node; 0 when unknown.
    pub column: usize,
    pub reason: String,
}

impl PolicyError {
    pub fn new(file: &str, line: usize, column: usize, reason: impl Into<String>) -> PolicyError {
        PolicyError {
            file: file.to_string(),
            line,
            column,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.file.is_empty() {
            write!(f, "{}:", self.file)?;
        }
        if self.line > 0 {
            write!(f, "{}:", self.line)?;
            if self.column > 0 {
                write!(f, "{}:", self.column)?;
            }
        }
        if !self.file.is_empty() || self.line > 0 {
            f.write_str(" ")?;
        }
        f.write_str(&self.reason)
    }
}

/// Every error found in an input, in input order; displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, thiserror::Error)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl From<PolicyError> for PolicyErrors {
    fn from(error: PolicyError) -> PolicyErrors {
        PolicyErrors(vec![error])
    }
}

impl PolicyErrors {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, PolicyError> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a PolicyErrors {
    type Item = &'a PolicyError;
    type IntoIter = std::slice::Iter<'a, PolicyError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for PolicyErrors {
    type Item = PolicyError;
    type IntoIter = std::vec::IntoIter<PolicyError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Something suspicious that does not make a document invalid (e.g. an unknown service in a
/// peer): `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Warning {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = Source {
            file: self.file.clone(),
            line: self.line,
        };
        write!(f, "{source}: {}", self.message)
    }
}
