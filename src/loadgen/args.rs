//! Command-line flags of `tracegate loadgen`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

/// Sends synthetic shop traffic (OTLP traces) to a gateway and reports what it acknowledged.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// Where to send; defaults to http://127.0.0.1:4317 for gRPC and http://127.0.0.1:4318 for
    /// HTTP (which posts to {endpoint}/v1/traces).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// OTLP transport.
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    pub protocol: Protocol,

    /// Offered load in spans per second; 0 sends as fast as the gateway acknowledges.
    #[arg(long, value_name = "SPANS_PER_SEC", default_value_t = 0)]
    pub rate: u64,

    /// How long to send, e.g. 10s or 2m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Spans in each export request.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub spans_per_request: u32,

    /// Export requests in flight at once: this many clients, each sending one request at a time
    /// (over its own connection for gRPC), like as many SDK instances.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=4_096))]
    pub concurrency: u32,

    /// Extra request header (gRPC metadata), e.g. "authorization=Bearer ..."; repeatable.
    #[arg(long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<RequestHeader>,

    /// Give up on a request after this long; it counts as an error.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// After a refusal (UNAVAILABLE / 503 / 429), a worker pauses this long before its next
    /// request, as OpenTelemetry SDKs back off; `0s` sends again at once.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
    pub backoff_on_refusal: Duration,

    /// Share of traces that never get an order (catalogue browsing), from 0 to 1, e.g. 0.3;
    /// without it each order flow (two traces) comes with two browsing traces: 0.5 of the
    /// traces, about 0.31 of the spans. The report gives both shares of what was sent.
    #[arg(long, value_name = "SHARE", value_parser = parse_share)]
    pub orderless_share: Option<f64>,

    /// Send every span once: the requests of the whole run (`--rate` times `--duration`, and a
    /// tenth more) are built before the clock starts, each with new trace ids, instead of a pool
    /// of 25 600 spans sent again and again. For what keeps spans (a store: a span sent again
    /// replaces itself there). Needs `--rate`; the pool takes about 450 bytes per span.
    #[arg(long)]
    pub unique_spans: bool,

    /// Instead of the shop's traffic, place this many orders that go no further (one
    /// `POST /orders` span each, order ids `P-1`, `P-2`, ...; the status `new` by the
    /// enricher's rules) and stop when each was sent once, or at `--duration`. For an order
    /// monitor holding that many orders in flight before a measured run.
    #[arg(long, value_name = "ORDERS", conflicts_with_all = ["unique_spans", "orderless_share"])]
    pub placed_orders: Option<u64>,

    /// Print the final report as one JSON line instead of text.
    #[arg(long)]
    pub json: bool,

    /// Also write each acknowledged request as a line `SENT_MS LATENCY_MS` (milliseconds from
    /// the start of the run to the request's start, and to its reply) to this file, sorted by
    /// start: where in time the slow acknowledgements fall.
    #[arg(long, value_name = "FILE")]
    pub latency_log: Option<std::path::PathBuf>,
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("expected a share from 0 to 1 (e.g. 0.3), got {s:?}")),
    }
}

impl LoadgenArgs {
    /// The endpoint to send to, with the protocol's default port when none was given.
    pub fn endpoint_or_default(&self) -> String {
        match (&self.endpoint, self.protocol) {
            (Some(endpoint), _) => endpoint.clone(),
            (None, Protocol::Grpc) => "http://127.0.0.1:4317".to_string(),
            (None, Protocol::Http) => "http://127.0.0.1:4318".to_string(),
        }
    }
}

/// How export requests travel.
#[derive(clap::ValueEnum, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// OTLP/gRPC `TraceService/Export`.
    Grpc,
    /// OTLP/HTTP `POST /v1/traces` with a protobuf body.
    Http,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        })
    }
}

/// A `KEY=VALUE` header given on the command line.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub name: HeaderName,
    pub value: HeaderValue,
}

impl FromStr for RequestHeader {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, value) = s.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| format!("{:?} is not a valid header name", name.trim()))?;
        let mut value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("the value of header {name} contains characters not allowed in a header"))?;
        value.set_sensitive(true);
        Ok(RequestHeader { name, value })
    }
}

/// Header values are often credentials: Debug shows only the name.
impl fmt::Debug for RequestHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=<redacted>", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadgenArgs,
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let args = Cli::try_parse_from(["loadgen"]).unwrap().args;
        assert_eq!(args.endpoint_or_default(), "http://127.0.0.1:4317");
        assert_eq!(args.protocol, Protocol::Grpc);
        assert_eq!(args.rate, 0);
        assert_eq!(args.duration, Duration::from_secs(10));
        assert_eq!(args.spans_per_request, 100);
        assert_eq!(args.concurrency, 4);
        assert!(args.headers.is_empty());
        assert_eq!(args.orderless_share, None);
        assert!(!args.json);
    }

    #[test]
    fn http_defaults_to_port_4318_and_headers_repeat() {
        let args = Cli::try_parse_from([
            "loadgen",
            "--protocol",
            "http",
            "--rate",
            "100000",
            "--duration",
            "1m 30s",
            "--header",
            "authorization=Bearer abc=",
            "--header",
            "x-tenant=shop",
            "--orderless-share",
            "0.3",
            "--json",
        ])
        .unwrap()
        .args;
        assert_eq!(args.endpoint_or_default(), "http://127.0.0.1:4318");
        assert_eq!(args.rate, 100_000);
        assert_eq!(args.duration, Duration::from_secs(90));
        assert_eq!(args.headers.len(), 2);
        assert_eq!(args.headers[0].name, "authorization");
        assert_eq!(args.headers[0].value, "Bearer abc=");
        assert_eq!(format!("{:?}", args.headers[0]), "authorization=<redacted>");
        assert_eq!(args.orderless_share, Some(0.3));
        assert!(args.json);
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            ["loadgen", "--header", "no-equals-sign"],
            ["loadgen", "--header", "bad name=x"],
            ["loadgen", "--concurrency", "0"],
            ["loadgen", "--spans-per-request", "0"],
            ["loadgen", "--duration", "soon"],
            ["loadgen", "--orderless-share", "1.5"],
            ["loadgen", "--orderless-share", "-0.1"],
            ["loadgen", "--orderless-share", "30%"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
