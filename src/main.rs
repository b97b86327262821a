//! The `tracegate` command: the edge of the program (CLI, configuration, logs, exit codes).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracegate::config::{Config, LogsConfig};
use tracegate::telemetry::init_logs;
use tracegate::Gateway;

#[derive(Parser)]
#[command(name = "tracegate", version, about = "An OpenTelemetry trace gateway that knows which order every span belongs to")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default; without --config, the built-in configuration).
    Run {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a configuration: print a summary, or every error with its path.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a pipeline's processors over OTLP JSON (a file or stdin) and print the result.
    Process {
        #[arg(long, short)]
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
    /// Send generated Shop/CRM/MES order traffic to an OTLP endpoint and report acks and latency.
    Loadgen(tracegate::loadgen::LoadgenArgs),
    /// Measure the elasticsearch exporter: documents encoded and sent per CPU-second.
    BenchElasticsearch {
        /// An Elasticsearch-API URL to send to (e.g. noida-db's); encoding only when absent.
        #[arg(long)]
        endpoint: Option<String>,
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

fn main() -> ExitCode {
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
            match runtime().and_then(|rt| rt.block_on(run(config))) {
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
        Command::BenchElasticsearch { serve_null: Some(addr), .. } => {
            match runtime()
                .and_then(|rt| rt.block_on(tracegate::exporters::elasticsearch_bench::serve_null(&addr)).map_err(anyhow::Error::msg))
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
                    tracegate::exporters::elasticsearch_bench::run(endpoint, spans, batch.max(100)).await.map_err(anyhow::Error::msg)
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
        Command::Audit(AuditCommand::Verify { file, config, key_env, key_file, chain_only }) => {
            audit_verify(&file, config.as_deref(), key_env.as_deref(), key_file, chain_only)
        }
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
                    eprintln!("{}: {}", path.display(), tracegate::exporters::error_chain(&e));
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
                    eprintln!("{}", tracegate::exporters::error_chain(&e));
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

async fn run(config: Config) -> anyhow::Result<()> {
    let gateway = Gateway::start(config).await.context("start-up failed")?;
    wait_for_signal().await?;
    tracing::info!("signal received; stopping receivers and draining queues");
    let report = gateway.shutdown().await;
    if report.undelivered_spans > 0 {
        tracing::warn!(undelivered_spans = report.undelivered_spans, "exiting with undelivered spans");
    }
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT"),
        _ = term.recv() => Ok(()),
    }
}
