//! The loop every target runs. Input `i` comes from a generator seeded with `(seed, i)`, so a
//! seed names a reproducible sequence; each execution runs under `catch_unwind` on a thread with
//! a tokio worker's stack, is timed, and is saved to `target/fuzz-crashes/` when it panics or
//! hangs. A stack overflow aborts the whole test binary (Rust cannot catch it): CI then fails
//! with "thread 'fuzz-<target>' has overflowed its stack", and `TRACEGATE_FUZZ_TRACE=1` keeps
//! the input being run in `<target>-last.bin`.
//!
//! Environment: `TRACEGATE_FUZZ_SECONDS` (per target, default 8), `TRACEGATE_FUZZ_SEED`
//! (decimal or 0x-hex), `TRACEGATE_FUZZ_HANG_MS` (default 2000), `TRACEGATE_FUZZ_INPUT` (run only
//! this saved input, through the target its file name starts with), `TRACEGATE_FUZZ_TRACE`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A tokio worker's default stack: the receivers decode on one, so a recursion that needs more
/// is a crash in production too.
const STACK_BYTES: usize = 2 << 20;
/// A campaign stops after saving this many crashes.
const MAX_CRASHES: usize = 5;
const DEFAULT_SEED: u64 = 20_261_120;

pub struct Settings {
    pub budget: Duration,
    pub seed: u64,
    pub hang: Duration,
    pub only_input: Option<PathBuf>,
    pub trace: bool,
}

impl Settings {
    pub fn from_env() -> Settings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let seconds = var("TRACEGATE_FUZZ_SECONDS").map_or(8.0, |v| v.trim().parse::<f64>().expect("TRACEGATE_FUZZ_SECONDS: seconds"));
        let seed = var("TRACEGATE_FUZZ_SEED").map_or(DEFAULT_SEED, |v| {
            let v = v.trim();
            match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            }
            .expect("TRACEGATE_FUZZ_SEED: a u64")
        });
        let hang_ms = var("TRACEGATE_FUZZ_HANG_MS").map_or(2000, |v| v.trim().parse::<u64>().expect("TRACEGATE_FUZZ_HANG_MS: ms"));
        Settings {
            budget: Duration::from_secs_f64(seconds.max(0.0)),
            seed,
            hang: Duration::from_millis(hang_ms),
            only_input: var("TRACEGATE_FUZZ_INPUT").map(PathBuf::from),
            trace: var("TRACEGATE_FUZZ_TRACE").is_some(),
        }
    }
}

/// Where crashing inputs go: `target/fuzz-crashes/`.
pub fn crash_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("fuzz-crashes")
}

/// The input being executed, for the watchdog.
struct Current {
    index: u64,
    started: Option<Instant>,
    input: Arc<Vec<u8>>,
}

struct Outcome {
    executions: u64,
    elapsed: Duration,
    slowest: Duration,
    crashes: Vec<String>,
}

/// Runs `name` for the time budget: first every `regressions` input, then generated ones.
/// `setup` builds the target on the fuzzing thread (again after each crash, so a target left in a
/// broken state by a panic does not report follow-on crashes). Fails the test naming every saved
/// input when anything crashed or hung.
pub fn fuzz<G, S, T>(name: &'static str, regressions: Vec<Vec<u8>>, mut generate: G, setup: S)
where
    G: FnMut(&mut fastrand::Rng) -> Vec<u8> + Send + 'static,
    S: Fn() -> T + Send + 'static,
    T: FnMut(&[u8]),
{
    let settings = Settings::from_env();
    let seed = settings.seed;
    let mut regressions = regressions;
    let mut only_replay = false;
    if let Some(path) = &settings.only_input {
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
        if !file.starts_with(&format!("{name}-")) {
            eprintln!("fuzz {name}: skipped (TRACEGATE_FUZZ_INPUT names another target)");
            return;
        }
        regressions = vec![std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))];
        only_replay = true;
    }
    let current = Arc::new(Mutex::new(Current { index: 0, started: None, input: Arc::new(Vec::new()) }));
    let (done_tx, done_rx) = mpsc::channel();
    let shared = current.clone();
    let (budget, hang, trace) = (settings.budget, settings.hang, settings.trace);

    let worker = std::thread::Builder::new()
        .name(format!("fuzz-{name}"))
        .stack_size(STACK_BYTES)
        .spawn(move || {
            let mut target = setup();
            let start = Instant::now();
            let mut outcome = Outcome { executions: 0, elapsed: Duration::ZERO, slowest: Duration::ZERO, crashes: Vec::new() };
            for index in 0u64.. {
                let input = match regressions.get(index as usize) {
                    Some(input) => input.clone(),
                    None if only_replay || start.elapsed() >= budget => break,
                    None => generate(&mut fastrand::Rng::with_seed(mix(seed, index))),
                };
                let input = Arc::new(input);
                if trace {
                    save(&format!("{name}-last.bin"), &input);
                }
                {
                    let mut c = shared.lock().unwrap_or_else(|p| p.into_inner());
                    *c = Current { index, started: Some(Instant::now()), input: input.clone() };
                }
                let began = Instant::now();
                let result = catch_unwind(AssertUnwindSafe(|| target(&input)));
                let took = began.elapsed();
                shared.lock().unwrap_or_else(|p| p.into_inner()).started = None;
                outcome.executions += 1;
                outcome.slowest = outcome.slowest.max(took);
                let failure = match result {
                    Err(payload) => Some(format!("panicked: {}", panic_message(&*payload))),
                    Ok(()) if took > hang => Some(format!("took {} ms", took.as_millis())),
                    Ok(()) => None,
                };
                if let Some(failure) = failure {
                    let file = save(&format!("{name}-{index}.bin"), &input);
                    outcome.crashes.push(format!("{} ({failure})", file.display()));
                    if outcome.crashes.len() >= MAX_CRASHES {
                        break;
                    }
                    target = setup();
                }
            }
            outcome.elapsed = start.elapsed();
            let _ = done_tx.send(outcome);
        })
        .expect("spawn the fuzzing thread");

    // The watchdog: an execution that never returns is reported with its input.
    let outcome = loop {
        match done_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(outcome) => break outcome,
            Err(RecvTimeoutError::Timeout) => {
                let c = current.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(started) = c.started.filter(|s| s.elapsed() > hang) {
                    let file = save(&format!("{name}-{}.bin", c.index), &c.input);
                    panic!(
                        "fuzz {name}: input {} still running after {} ms (hang); saved to {}",
                        c.index,
                        started.elapsed().as_millis(),
                        file.display()
                    );
                }
            }
            Err(RecvTimeoutError::Disconnected) => match worker.join() {
                Err(payload) => std::panic::resume_unwind(payload),
                Ok(()) => panic!("fuzz {name}: the fuzzing thread ended without a report"),
            },
        }
    };
    let _ = worker.join();
    eprintln!(
        "fuzz {name}: {} executions, seed {seed}, {} crashes ({:.1} s, slowest execution {} ms)",
        outcome.executions,
        outcome.crashes.len(),
        outcome.elapsed.as_secs_f64(),
        outcome.slowest.as_millis()
    );
    assert!(
        outcome.crashes.is_empty(),
        "fuzz {name}: {} crashing inputs (replay one with TRACEGATE_FUZZ_INPUT=<file>):\n  {}",
        outcome.crashes.len(),
        outcome.crashes.join("\n  ")
    );
}

/// A well-mixed per-input seed (SplitMix64 of both halves).
fn mix(seed: u64, index: u64) -> u64 {
    let split = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    split(seed ^ split(index))
}

fn save(file: &str, input: &[u8]) -> PathBuf {
    let dir = crash_dir();
    let path = dir.join(file);
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, input)) {
        eprintln!("cannot save {}: {e}", path.display());
    }
    path
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}
