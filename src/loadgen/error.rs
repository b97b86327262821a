//! What can stop a load run before it starts, or keep its latency log from being written.

/// Errors of `tracegate loadgen`. Failures of single requests during the run are not errors:
/// they are counted in the report.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("invalid endpoint {endpoint:?}")]
    InvalidEndpoint {
        endpoint: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("endpoint {endpoint:?} must start with http:// (the load generator speaks plain text only)")]
    UnsupportedScheme { endpoint: String },
    #[error("--unique-spans needs a --rate above 0: the requests of the whole run are built before it starts")]
    UniqueSpansWithoutRate,
    #[error("cannot connect to {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot write the latency log {0:?}")]
    LatencyLog(std::path::PathBuf, #[source] std::io::Error),
}

/// Why `tracegate bench-metrics` or `bench-enrich` gave no figures.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A command-line value out of range (the text names the flag).
    #[error("{0}")]
    Argument(&'static str),
    #[error("the benchmark's processors cannot be built")]
    Build(#[from] crate::processors::ProcessorBuildError),
    #[error("the benchmark's enricher cannot be built")]
    Enricher(#[from] regex::Error),
    #[error("the pipeline refused a request")]
    Admit(#[from] crate::pipeline::AdmitError),
    #[error("the span_metrics processor recorded nothing")]
    NothingRecorded,
    /// The enrichment was wrong: a span came out twice, or not every span came out.
    #[error("a span came out twice on {threads} threads")]
    Duplicate { threads: usize },
    #[error("{got} of {expected} spans came out on {threads} threads")]
    Lost { got: usize, expected: usize, threads: usize },
}
