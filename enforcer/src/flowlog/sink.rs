//! Where flow-log lines go: stdout, or a file rotated by size. When the file would grow past
//! `max_size`, it is renamed `PATH.1` (`PATH.1` to `PATH.2`, ..., the oldest beyond `files`
//! removed) and a new `PATH` is started: the scheme of logrotate, which Fluent Bit's and Vector's
//! file inputs follow by inode. A line is never split across files.
//!
//! Not the `file-rotate` crate: it opens the file read-write when built (which would block the
//! caller on a FIFO with no reader, and succeeds without a reader on Linux, hiding a stalled
//! sink), pulls chrono and flate2 in, and swallows open errors, so lost lines could not be
//! counted.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

/// Where the lines go (`--flow-log PATH|-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

impl std::str::FromStr for Target {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s == "-" {
            Target::Stdout
        } else {
            Target::File(PathBuf::from(s))
        })
    }
}

impl<'de> serde::Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Err(serde::de::Error::custom("flowLog: a file, or - for stdout"));
        }
        let Ok(target) = s.parse();
        Ok(target)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Stdout => f.write_str("-"),
            Target::File(p) => p.display().fmt(f),
        }
    }
}

/// A writer of whole lines.
pub enum Sink {
    Stdout(io::Stdout),
    File(Rotating),
}

impl Sink {
    /// Opens nothing yet: a file is opened at the first line (by the writer thread, which may
    /// block there, e.g. on a FIFO with no reader).
    pub fn new(target: &Target, max_size: u64, files: usize) -> Sink {
        match target {
            Target::Stdout => Sink::Stdout(io::stdout()),
            Target::File(path) => Sink::File(Rotating {
                path: path.clone(),
                max_size,
                files,
                file: None,
                size: 0,
            }),
        }
    }

    /// Write one line (with its newline), whole.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout(out) => {
                let mut out = out.lock();
                out.write_all(line)?;
                out.flush()
            }
            Sink::File(f) => f.write_line(line),
        }
    }
}

/// A file rotated by size, keeping `files` rotated files besides the current one.
pub struct Rotating {
    path: PathBuf,
    max_size: u64,
    files: usize,
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
}

impl Rotating {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        if self.file.is_none() {
            // A file left by an earlier run is continued (or rotated first, if full).
            self.size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        }
        if self.size > 0 && self.size + len > self.max_size {
            self.rotate()?;
        }
        let mut file = if let Some(f) = self.file.take() {
            f
        } else {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?
        };
        // On an error the file is closed, and opened again at the next line (it may have been
        // removed, or the disk freed).
        file.write_all(line)?;
        self.file = Some(file);
        self.size += len;
        Ok(())
    }

    /// Shift `PATH.(n)` to `PATH.(n+1)` from the oldest, drop the one beyond `files`, move
    /// `PATH` to `PATH.1`; the next line opens a new `PATH`. A regular file only: a FIFO or a
    /// device is written to as it is.
    fn rotate(&mut self) -> io::Result<()> {
        if !std::fs::metadata(&self.path).is_ok_and(|m| m.is_file()) {
            self.size = 0;
            return Ok(());
        }
        self.file = None;
        self.size = 0;
        if self.files == 0 {
            return std::fs::remove_file(&self.path);
        }
        let _ = std::fs::remove_file(numbered(&self.path, self.files));
        for n in (1..self.files).rev() {
            let from = numbered(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, numbered(&self.path, n + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(&self.path, 1))
    }
}

/// `PATH.n`.
pub fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_the_size_limit_and_keeps_n_files() {
        let dir = std::env::temp_dir().join(format!("enforcer-flowlog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("flows.log");
        let line = b"0123456789012345678\n"; // 20 bytes
        let mut sink = Sink::new(&Target::File(path.clone()), 50, 2);
        for _ in 0..9 {
            sink.write_line(line).expect("write");
        }
        // 2 lines fit in 50 bytes (a third would make 60): 9 lines = 2 + 2 + 2 + 2 + 1.
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
        assert_eq!(size(&path), Some(20));
        assert_eq!(size(&numbered(&path, 1)), Some(40));
        assert_eq!(size(&numbered(&path, 2)), Some(40));
        assert_eq!(
            size(&numbered(&path, 3)),
            None,
            "only 2 rotated files are kept"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn dash_is_stdout() {
        assert_eq!("-".parse(), Ok(Target::Stdout));
        assert_eq!(
            "/var/log/f.json".parse(),
            Ok(Target::File("/var/log/f.json".into()))
        );
    }
}
