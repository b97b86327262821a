//! Tests only: an exporter that answers each call from a script and records when it was called
//! and with how many spans, for paused-time tests of the runner.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::error::{ExportError, ExportOutcome};
use crate::pipeline::Payload;

/// One scripted answer.
pub enum Answer {
    Ok,
    Fail(ExportError),
    /// Never answers (the runner's timeout must end the attempt).
    Hang,
}

pub struct Scripted {
    started: Instant,
    answers: Mutex<VecDeque<Answer>>,
    /// (seconds since the exporter was made, spans) per call.
    pub calls: Mutex<Vec<(f64, usize)>>,
}

impl Scripted {
    /// Answers `answers` in order, then `Ok` for ever.
    pub fn new(answers: Vec<Answer>) -> Scripted {
        Scripted { started: Instant::now(), answers: Mutex::new(answers.into()), calls: Mutex::new(Vec::new()) }
    }

    pub fn calls(&self) -> Vec<(f64, usize)> {
        self.calls.lock().unwrap().clone()
    }

    pub async fn export(&self, payloads: Vec<Arc<Payload>>) -> Result<ExportOutcome, ExportError> {
        let spans = payloads.iter().map(|p| p.span_count()).sum();
        self.calls.lock().unwrap().push((self.started.elapsed().as_secs_f64(), spans));
        let answer = self.answers.lock().unwrap().pop_front().unwrap_or(Answer::Ok);
        match answer {
            Answer::Ok => Ok(ExportOutcome::default()),
            Answer::Fail(e) => Err(e),
            Answer::Hang => std::future::pending().await,
        }
    }
}
