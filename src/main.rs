//! The `tracegate` command: the edge of the program (CLI, configuration, logs, exit codes).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracegate::config::{Config, LogsConfig};
use tracegate::telemetry::init_logs;
use tracegate::Gateway;

/// mimalloc instead of glibc malloc: the span path allocates and frees many small objects on
/// several threads, where glibc's arena locking and consolidation cost a third of the CPU
/// (BENCHMARKS.md, "Allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tracegate",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("TRACEGATE_GIT_COMMIT"), ")"),
    about = "An OpenTelemetry trace gateway that knows which order every span belongs to",
    after_help = "Without a command, tracegate runs the built-in configuration (config/tracegate.yaml): OTLP on \
                  127.0.0.1:4317 (gRPC) and :4318 (HTTP), the read API on :8080, spans in ./data."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default; without --config, the built-in configuration).
    Run {
        /// The YAML configuration file (the Collector's shape; see config/examples/). Without it,
        /// the built-in configuration runs.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Check a configuration: print a summary, or every error with its path.
    Validate {
        /// The YAML configuration file to check (files it names are checked too).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run a pipeline's processors over OTLP JSON (a file or stdin) and print the result.
    Process {
        /// The YAML configuration whose processors run.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// OTLP JSON ExportTraceServiceRequest; stdin when absent.
        #[arg(long, short)]
        input: Option<PathBuf>,
        /// The pipeline whose processors run; needed when the configuration has several.
        #[arg(long, short)]
        pipeline: Option<String>,
    },
    /// Audit log tools.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print a shell completion script (e.g. `tracegate completions bash > /etc/bash_completion.d/tracegate`).
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page in roff (e.g. `tracegate man > /usr/local/share/man/man1/tracegate.1`).
    Man,
    /// Send a few Shop/CRM/MES orders (times relative to now) to a running gateway, wait until
    /// they are readable, and print their ids and the commands to look them up.
    Demo(tracegate::demo::DemoArgs),
    /// Send generated Shop/CRM/MES order traffic to an OTLP endpoint and report acks and latency.
    Loadgen(tracegate::loadgen::LoadgenArgs),
    /// Receive OTLP (gRPC and HTTP), count the spans without decoding them, answer OK (benchmark sink).
    BenchSink(tracegate::loadgen::SinkArgs),
    /// Measure the order monitor: memory per pending timer, CPU per span with it on and off.
    BenchMonitor {
        /// Orders in flight for the memory figure, three pending rules each.
        #[arg(long, default_value_t = 1_000_000)]
        orders: usize,
        /// Spans of shop traffic for the CPU figure.
        #[arg(long, default_value_t = 200_000)]
        spans: usize,
        /// Rounds of the CPU figure, alternating the order of the modes; the least CPU of each
        /// mode is kept.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Run only these modes of the CPU figure (comma-separated: off, feed, on), e.g. under a
        /// profiler; the others print as zero.
        #[arg(long, value_name = "MODES")]
        only: Option<String>,
        /// Orders the running monitor holds before the CPU rounds, three pending rules each
        /// (the rules then all start at `new`); 0: the monitor starts empty.
        #[arg(long, default_value_t = 0)]
        in_flight: usize,
    },
    /// Measure the order_enrich processor from several threads at once: spans per second per
    /// thread count, the speed-up over one thread, and whether every result equals one thread's.
    BenchEnrich {
        /// Thread counts to run, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<usize>,
        /// Requests of 100 spans of shop traffic per run.
        #[arg(long, default_value_t = 2_000)]
        requests: usize,
        /// Runs per thread count, alternating; the fastest is kept.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Measure the span_metrics processor: CPU per span with the derived metrics off and on.
    BenchMetrics {
        /// Spans of shop traffic per round.
        #[arg(long, default_value_t = 200_000)]
        spans: usize,
        /// Rounds, alternating which mode goes first; the least CPU of each mode is kept.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Measure the elasticsearch exporter: documents encoded and sent per CPU-second.
    BenchElasticsearch {
        /// An Elasticsearch-API URL to send to (e.g. noida-db's); encoding only when absent.
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// How many span documents to encode (and send).
        #[arg(long, default_value_t = 200_000)]
        spans: usize,
        /// Spans per export call (bulk requests are cut at 5 MiB within it).
        #[arg(long, default_value_t = 5_000)]
        batch: usize,
        /// Measure nothing: answer `_bulk` on this address like a healthy cluster, at no cost to
        /// the exporter (for `--endpoint` and end-to-end runs; see BENCHMARKS.md).
        #[arg(long, value_name = "ADDR")]
        serve_null: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check an audit log with its key: every record's MAC, the hash chain and the checkpoints;
    /// exit 1 naming the first record that was changed, removed, reordered, inserted or made up.
    Verify {
        /// The audit log (JSON lines).
        file: PathBuf,
        /// The configuration whose audit key (checkpoint_key or checkpoint_key_file) wrote the log.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The environment variable holding the audit key (instead of --config).
        #[arg(long)]
        key_env: Option<String>,
        /// A file holding the audit key (instead of --config).
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Without a key: check only the hash chain. This finds damage and naive edits, not a
        /// rewrite by someone who recomputed the hashes.
        #[arg(long)]
        chain_only: bool,
    },
}

/// mimalloc v3's `mi_option_purge_delay` (`mi_option_e` in its include/mimalloc.h): how long freed
/// memory stays with the process before it is given back to the system.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the system after 500 ms instead of mimalloc's 1 s: memory freed in
/// bursts (a release of spans whose wait ended, an exporter batch sent) no longer stays counted in
/// the resident size for a second on top of the memory taking its place (peak RSS of the orderless
/// benchmark: about 105 -> 95 MiB). Shorter costs CPU: memory freed between two rounds of work
/// comes back as fresh pages to fault in (at 250 ms `bench-enrich` lost about 18% and the order
/// monitor, which turns every 200 ms, cost a third more). `MIMALLOC_PURGE_DELAY` in
/// the environment wins.
///
/// No transparent huge pages. mimalloc asked for them on its arenas (built without, feature
/// `no_thp`), and where the system gives them to every process (`always`) this turns them off
/// for this one: with them, every 2 MiB of an arena that was touched at all was resident whole,
/// and what mimalloc gave back in 64 KiB pieces stayed. The orderless benchmark's peak RSS went
/// from 118 to 110 MiB, and the gateway without enrichment from 58 to 36 MiB. The whole gateway's
/// CPU per span showed no difference; the enricher alone (`bench-enrich`, no network) ran 7-18%
/// slower on one thread. Both switches are needed: with the prctl alone, what mimalloc touched
/// before `main` stays in huge pages (4 MiB idle).
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: before any thread is started; mimalloc reads the option on each purge.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 500) };
    }
    // SAFETY: prctl with integer arguments only; a kernel without the option refuses it, and
    // the gateway runs as before.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    unsafe {
        let (on, unused): (libc::c_ulong, libc::c_ulong) = (1, 0);
        libc::prctl(libc::PR_SET_THP_DISABLE, on, unused, unused, unused)
    };
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run { config: None }) {
        Command::Validate { config } => match Config::from_file(&config) {
            Ok(c) => {
                println!("{}: valid", config.display());
                print!("{}", c.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{}: {e}", config.display());
                ExitCode::from(2)
            }
        },
        Command::Run { config } => {
            let file = config.clone();
            let config = match config {
                Some(path) => match Config::from_file(&path) {
                    Ok(c) => c,
                    Err(e) => {
                        eprint!("{}: {e}", path.display());
                        return ExitCode::from(2);
                    }
                },
                None => match Config::default_config() {
                    Ok(c) => c,
                    Err(e) => {
                        eprint!("built-in configuration (config/tracegate.yaml and its TRACEGATE_* environment variables): {e}");
                        return ExitCode::from(2);
                    }
                },
            };
            init_logs(&config.service.telemetry.logs);
            match runtime().and_then(|rt| rt.block_on(run(config, file))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "tracegate failed");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Process { config, input, pipeline } => match process(&config, input.as_deref(), pipeline.as_deref()) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e:#}");
                ExitCode::from(2)
            }
        },
        Command::BenchEnrich { threads, requests, rounds } => {
            init_logs(&LogsConfig { level: "warn".into(), ..Default::default() });
            match tracegate::loadgen::enrich_bench::run(&threads, requests, rounds).map_err(anyhow::Error::from) {
                Ok(f) => {
                    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
                    println!(
                        "spans: {} of shop traffic in {} requests, order_enrich with {} shards, best of {} rounds, {cores} cores",
                        f.spans, f.requests, f.shards, f.rounds
                    );
                    for r in &f.runs {
                        let speed_up = f.speed_up(r.threads).map(|x| format!(" ({x:.2}x one thread)")).unwrap_or_default();
                        println!("threads {}: {:.0} spans/s{speed_up}", r.threads, r.spans_per_second);
                    }
                    println!("identical: {}", if f.identical() { "yes" } else { "no" });
                    if f.identical() {
                        ExitCode::SUCCESS
                    } else {
                        eprintln!("error: a multi-threaded run tagged spans differently from the single-threaded run");
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::BenchMetrics { spans, rounds } => {
            init_logs(&LogsConfig { level: "warn".into(), ..Default::default() });
            let run = |rt: tokio::runtime::Runtime| {
                rt.block_on(tracegate::loadgen::metrics_bench::run(spans, rounds)).map_err(anyhow::Error::from)
            };
            match runtime().and_then(run) {
                Ok(f) => {
                    println!("spans: {} of shop traffic through order_enrich, {} rounds", f.spans, f.rounds);
                    let (off, on) = (f.cpu_per_span_off.as_nanos() as f64, f.cpu_per_span_on.as_nanos() as f64);
                    println!("CPU per span: {off:.0} ns with span_metrics off, {on:.0} ns on ({:+.1}%)", (on - off) / off.max(1.0) * 100.0);
                    println!("label sets held by the derived metrics: {}", f.series);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::BenchMonitor { orders, spans, rounds, only, in_flight } => {
            init_logs(&LogsConfig { level: "warn".into(), ..Default::default() });
            match runtime().and_then(|rt| {
                rt.block_on(tracegate::monitors::bench::run(orders, spans, rounds, only.as_deref(), in_flight)).map_err(anyhow::Error::from)
            }) {
                Ok(f) => {
                    println!("orders in flight: {}, pending timers: {}", f.orders, f.timers);
                    println!("memory: {:.0} bytes per pending timer (resident growth / timers)", f.bytes_per_timer);
                    println!("engine: {:.0} facts applied per second", f.apply_facts_per_second);
                    println!("spans: {} of shop traffic through order_enrich", f.spans);
                    if f.in_flight > 0 {
                        println!(
                            "the running monitor held {} orders in flight ({} pending timers) before the traffic",
                            f.in_flight, f.in_flight_timers
                        );
                    }
                    let (off, on) = (f.cpu_per_span_off.as_nanos() as f64, f.cpu_per_span_on.as_nanos() as f64);
                    println!("CPU per span: {off:.0} ns with the monitor off, {on:.0} ns on ({:+.1}%)", (on - off) / off.max(1.0) * 100.0);
                    if let (Some(first), Some(last)) = (f.round_differences.first(), f.round_differences.last()) {
                        let median = f.round_differences[f.round_differences.len() / 2];
                        println!(
                            "  on against off within each round: median {:+.1}% ({} rounds, {:+.1}% to {:+.1}%)",
                            median * 100.0,
                            f.round_differences.len(),
                            first * 100.0,
                            last * 100.0
                        );
                    }
                    let feed = f.cpu_per_span_feed_only.as_nanos() as f64;
                    println!(
                        "  of which the request path (facts picked and sent): {:+.0} ns ({:+.1}%)",
                        feed - off,
                        (feed - off) / off.max(1.0) * 100.0
                    );
                    let turns = f.cpu_per_span_turns.as_nanos() as f64;
                    println!(
                        "  the monitor task's turns alone (thread CPU time: facts applied, store written): {turns:.0} ns ({:.1}%)",
                        turns / off.max(1.0) * 100.0
                    );
                    println!("clocks still running after the traffic: {}", f.pending_after);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::BenchElasticsearch { serve_null: Some(addr), .. } => {
            match runtime()
                .and_then(|rt| rt.block_on(tracegate::exporters::elasticsearch_bench::serve_null(&addr)).map_err(anyhow::Error::from))
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::BenchElasticsearch { endpoint, spans, batch, serve_null: None } => {
            init_logs(&LogsConfig { level: "warn".into(), ..Default::default() });
            let with_endpoint = endpoint.is_some();
            match runtime().and_then(|rt| {
                rt.block_on(async {
                    tracegate::exporters::elasticsearch_bench::run(endpoint, spans, batch.max(100)).await.map_err(anyhow::Error::from)
                })
            }) {
                Ok(f) => {
                    println!("spans: {}", f.spans);
                    println!(
                        "encode (bulk NDJSON): {:.0} docs per CPU-second, {:.0} bytes per doc",
                        f.encode_docs_per_cpu_second, f.encode_bytes_per_doc
                    );
                    println!("gzip (fast): {:.0} docs per CPU-second, ratio {:.1}", f.gzip_docs_per_cpu_second, f.gzip_ratio);
                    if let Some((wall, cpu)) = f.send {
                        println!(
                            "send (encode+gzip+bulk+replies, orders off): {wall:.0} docs/s, {cpu:.0} docs per CPU-second of tracegate"
                        );
                    }
                    if let Some((wall, cpu)) = f.send_orders {
                        println!("send with the orders index: {wall:.0} docs/s, {cpu:.0} docs per CPU-second of tracegate");
                    }
                    if !with_endpoint {
                        println!("(pass --endpoint URL to measure sending)");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("bench-elasticsearch failed: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "tracegate", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => match clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cannot write the manual page: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Audit(AuditCommand::Verify { file, config, key_env, key_file, chain_only }) => {
            audit_verify(&file, config.as_deref(), key_env.as_deref(), key_file, chain_only)
        }
        Command::Demo(args) => {
            init_logs(&LogsConfig { level: "warn".into(), ..Default::default() });
            match runtime().and_then(|rt| rt.block_on(async { tracegate::demo::run(args).await.map_err(anyhow::Error::from) })) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("demo failed: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::BenchSink(args) => match tracegate::loadgen::run_sink(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench-sink failed: {:#}", anyhow::Error::from(e));
                ExitCode::FAILURE
            }
        },
        Command::Loadgen(args) => {
            init_logs(&LogsConfig { level: "warn".into(), ..Default::default() });
            let json = args.json;
            match runtime().and_then(|rt| rt.block_on(async { tracegate::loadgen::run(args).await.map_err(anyhow::Error::from) })) {
                Ok(report) => {
                    if json {
                        println!("{}", serde_json::to_string(&report).unwrap_or_default());
                    } else {
                        println!("{report}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("loadgen failed: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn audit_verify(
    file: &std::path::Path,
    config: Option<&std::path::Path>,
    key_env: Option<&str>,
    key_file: Option<PathBuf>,
    chain_only: bool,
) -> ExitCode {
    let key = match (config, key_env, key_file) {
        (Some(path), _, _) => match Config::from_file(path) {
            Ok(c) => match c.audit.key() {
                Ok(key) => key,
                Err(e) => {
                    eprintln!("{}: {}", path.display(), tracegate::shared::error_chain(&e));
                    return ExitCode::from(2);
                }
            },
            Err(e) => {
                eprint!("{}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        (None, Some(name), _) => match std::env::var(name) {
            Ok(k) => Some(k.into_bytes()),
            Err(_) => {
                eprintln!("environment variable {name} is not set");
                return ExitCode::from(2);
            }
        },
        (None, None, Some(path)) => {
            let audit = tracegate::audit::AuditConfig { checkpoint_key_file: Some(path.clone()), ..Default::default() };
            match audit.key() {
                Ok(key) => key,
                Err(e) => {
                    eprintln!("{}", tracegate::shared::error_chain(&e));
                    return ExitCode::from(2);
                }
            }
        }
        (None, None, None) => None,
    };
    if key.is_none() && !chain_only {
        eprintln!(
            "no audit key given: pass --config, --key-env or --key-file to verify the log; \
             --chain-only checks the hash chain alone, which anyone can recompute"
        );
        return ExitCode::from(2);
    }
    match tracegate::audit::verify_file(file, key.as_deref()) {
        Ok(report) => {
            let how = if report.authenticated {
                "authentic (every record's MAC verified with the key)"
            } else {
                "chain intact, NOT authenticated (no key: a rewrite with recomputed hashes would pass)"
            };
            println!(
                "{}: {how}: {} records, {} checkpoints, {} runs, {} unclean restarts",
                file.display(),
                report.records,
                report.checkpoints,
                report.runs,
                report.unclean_restarts
            );
            if !report.ends_cleanly {
                println!(
                    "note: the log does not end with a shutdown checkpoint: tracegate is running, or stopped without one \
                     (crash, kill -9), or records at the end were removed"
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

fn process(config: &std::path::Path, input: Option<&std::path::Path>, pipeline: Option<&str>) -> anyhow::Result<String> {
    use std::io::Read;
    let config = Config::from_file(config).map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    let mut data = Vec::new();
    match input {
        Some(path) => data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        None => {
            std::io::stdin().read_to_end(&mut data).context("cannot read stdin")?;
        }
    }
    // The processors use tokio's clock; a small runtime provides it.
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().context("cannot start the runtime")?;
    let result = rt.block_on(async { tracegate::offline::process_json(&config, pipeline, &data) })?;
    Ok(serde_json::to_string_pretty(&result)?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

async fn run(config: Config, file: Option<PathBuf>) -> anyhow::Result<()> {
    let source = match file {
        Some(path) => tracegate::gateway::ConfigSource::File(path),
        None => tracegate::gateway::ConfigSource::BuiltIn,
    };
    // Before anything listens: a signal that comes while the gateway starts waits for it (a
    // SIGHUP then reloads, a SIGTERM stops it) instead of ending the process by default.
    let mut signals = Signals::install()?;
    let gateway = Gateway::start_from(config, source).await.context("start-up failed")?;
    signals.wait(Some(&gateway.reloader())).await?;
    tracing::info!("signal received; stopping receivers and draining queues (a second signal exits at once)");
    let backlog = gateway.backlog();
    let shutdown = gateway.shutdown();
    tokio::pin!(shutdown);
    tokio::select! {
        report = &mut shutdown => {
            if report.lost_spans() > 0 {
                tracing::warn!(lost_spans = report.lost_spans(), "exiting with spans that were accepted and not delivered");
            }
            Ok(())
        }
        signal = signals.wait(None) => {
            signal?;
            let abandoned = backlog.spans();
            tracing::warn!(abandoned_spans = abandoned, "second signal: exiting now; {abandoned} accepted spans still queued are abandoned");
            anyhow::bail!("forced to exit by a second signal with {abandoned} spans undelivered")
        }
    }
}

/// The signals `run` handles, listened for from the start.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            hangup: signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?,
        })
    }

    /// Waits for SIGINT or SIGTERM. SIGHUP reloads the configuration (the reloader logs what
    /// changed, or why the running configuration stays); during shutdown it is ignored.
    async fn wait(&mut self, reloader: Option<&tracegate::gateway::Reloader>) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = self.interrupt.recv() => return Ok(()),
                _ = self.term.recv() => return Ok(()),
                _ = self.hangup.recv() => match reloader {
                    // The reloader logs the outcome and counts it.
                    Some(reloader) => {
                        tracing::info!("SIGHUP: reloading the configuration");
                        let _ = reloader.reload().await;
                    }
                    None => tracing::warn!("SIGHUP during shutdown: ignored"),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The option index is mimalloc v3's purge delay: the option there defaults to 1 000 ms, which
    /// no neighbouring option does.
    #[test]
    fn the_purge_delay_option_is_mimallocs() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) }, 1000);
        }
    }
}
