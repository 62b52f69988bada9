//! Judges one input: the parser runs on a worker thread, each input bounded in time; a panic,
//! an error without a location, or an input over the time bound is a failure.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use enforcer_policy::{parse::parse_documents, Document, PolicyErrors};

/// A parser under test.
pub type Parser = fn(&str, &str) -> Result<Vec<Document>, PolicyErrors>;

/// The file name the inputs are parsed as (every error must name it).
pub const FILE: &str = "fuzz.yaml";

/// What the parser made of one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// Rejected, every error with the file and a line.
    Rejected,
    /// Rejected with at least one error that has no line (or another file): the message.
    Unlocated(String),
    Panicked(String),
}

/// Counts over a run.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub inputs: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub panics: u64,
    pub unlocated: u64,
    pub bytes: u64,
    pub slowest: Duration,
    /// Up to 5 failing inputs with what went wrong.
    pub failures: Vec<(String, String)>,
}

impl Figures {
    pub fn failed(&self) -> bool {
        self.panics > 0 || self.unlocated > 0
    }
}

fn judge(parse: Parser, text: &str) -> Verdict {
    match catch_unwind(AssertUnwindSafe(|| parse(FILE, text))) {
        Ok(Ok(_)) => Verdict::Accepted,
        Ok(Err(errors)) => {
            let bad = errors.iter().find(|e| e.file != FILE || e.line == 0);
            match (errors.is_empty(), bad) {
                (true, _) => Verdict::Unlocated("an empty error list".to_string()),
                (false, Some(e)) => Verdict::Unlocated(e.to_string()),
                (false, None) => Verdict::Rejected,
            }
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default();
            Verdict::Panicked(message)
        }
    }
}

/// A parser on its own thread: each input is answered within `limit`, or the run stops.
pub struct Judge {
    inputs: Sender<String>,
    verdicts: Receiver<(Verdict, Duration)>,
    limit: Duration,
    pub figures: Figures,
}

impl Judge {
    /// A judge of the policy parser.
    pub fn new(limit: Duration) -> Judge {
        Judge::of(parse_documents, limit)
    }

    pub fn of(parse: Parser, limit: Duration) -> Judge {
        let (inputs, rx) = channel::<String>();
        let (tx, verdicts) = channel();
        thread::Builder::new()
            .name("policy-fuzz".to_string())
            .spawn(move || {
                for text in rx {
                    let start = Instant::now();
                    let verdict = judge(parse, &text);
                    if tx.send((verdict, start.elapsed())).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn the parser thread");
        Judge {
            inputs,
            verdicts,
            limit,
            figures: Figures::default(),
        }
    }

    /// Judges `text` and counts it. Panics (ending the run) if the parser does not answer
    /// within the limit: a hang.
    ///
    /// With `ENFORCER_POLICY_FUZZ_TRACE=FILE`, each input is written to FILE first: an input
    /// that aborts the process (a stack overflow cannot be caught) is left there.
    pub fn check(&mut self, text: &str) -> Verdict {
        if let Some(path) = std::env::var_os("ENFORCER_POLICY_FUZZ_TRACE") {
            std::fs::write(path, text).expect("write the trace file");
        }
        self.inputs
            .send(text.to_string())
            .expect("parser thread alive");
        let Ok((verdict, took)) = self.verdicts.recv_timeout(self.limit) else {
            panic!(
                "no answer within {:?} (a hang) for input:\n{text}",
                self.limit
            );
        };
        let f = &mut self.figures;
        f.inputs += 1;
        f.bytes += text.len() as u64;
        f.slowest = f.slowest.max(took);
        match &verdict {
            Verdict::Accepted => f.accepted += 1,
            Verdict::Rejected => f.rejected += 1,
            Verdict::Unlocated(m) | Verdict::Panicked(m) => {
                if matches!(verdict, Verdict::Panicked(_)) {
                    f.panics += 1;
                } else {
                    f.unlocated += 1;
                }
                if f.failures.len() < 5 {
                    f.failures.push((text.to_string(), m.clone()));
                }
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use enforcer_policy::PolicyError;

    use super::*;

    #[test]
    fn the_judge_sees_panics_unlocated_errors_and_hangs() {
        let mut judge = Judge::of(|_, _| panic!("boom"), Duration::from_secs(5));
        assert_eq!(judge.check("x"), Verdict::Panicked("boom".to_string()));
        let unlocated = |_: &str, _: &str| Err(PolicyError::new(FILE, 0, 0, "where?").into());
        let mut judge = Judge::of(unlocated, Duration::from_secs(5));
        assert!(matches!(judge.check("x"), Verdict::Unlocated(_)));
        let located = |_: &str, _: &str| Err(PolicyError::new(FILE, 1, 1, "bad").into());
        let mut judge = Judge::of(located, Duration::from_secs(5));
        assert_eq!(judge.check("x"), Verdict::Rejected);
        assert!(!judge.figures.failed());
        let hang = |_: &str, _: &str| {
            thread::sleep(Duration::from_secs(3));
            Ok(Vec::new())
        };
        let mut judge = Judge::of(hang, Duration::from_millis(100));
        let outcome = catch_unwind(AssertUnwindSafe(|| judge.check("x")));
        assert!(outcome.is_err(), "a hang ends the run");
    }
}
