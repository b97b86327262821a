//! Command-line flags of `tracegate demo`.

use std::time::Duration;

use super::error::DemoError;

/// Sends a few Shop/CRM/MES orders to a running gateway and prints how to look them up.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// The gateway's OTLP/HTTP endpoint: spans (unless --otlp-grpc is given) and MES order
    /// events go here. Default http://127.0.0.1:4318, or http://$TRACEGATE_HTTP_ENDPOINT when
    /// that is set (the variable the built-in configuration listens on).
    #[arg(long, value_name = "URL")]
    pub otlp_http: Option<String>,

    /// Send the spans over OTLP/gRPC to this endpoint instead (e.g. http://127.0.0.1:4317);
    /// order events still go to --otlp-http.
    #[arg(long, value_name = "URL")]
    pub otlp_grpc: Option<String>,

    /// The gateway's read API, polled until every order is readable. Default
    /// http://127.0.0.1:8080, or http://$TRACEGATE_API_ENDPOINT when that is set.
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,

    /// How many orders to send (each a little further along: handed to the courier,
    /// manufactured, in production, ...).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub orders: u32,

    /// Jaeger UI's address (e.g. http://127.0.0.1:16686), when the gateway exports to Jaeger:
    /// also wait until Jaeger finds every order by its `order.id` tag, and print the UI's search
    /// links.
    #[arg(long, value_name = "URL")]
    pub jaeger_ui: Option<String>,

    /// How long to wait for the gateway to answer, and then for the orders to become readable.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The addresses a run uses, defaults filled in and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoints {
    pub(crate) otlp_http: String,
    pub(crate) otlp_grpc: Option<String>,
    pub(crate) api: String,
    pub(crate) jaeger_ui: Option<String>,
}

impl DemoArgs {
    pub(crate) fn endpoints(&self) -> Result<Endpoints, DemoError> {
        self.endpoints_with_env(&|name| std::env::var(name).ok())
    }

    pub(crate) fn endpoints_with_env(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Endpoints, DemoError> {
        let otlp_http = match &self.otlp_http {
            Some(url) => url.clone(),
            None => default_url(env("TRACEGATE_HTTP_ENDPOINT"), "127.0.0.1:4318"),
        };
        let api = match &self.api {
            Some(url) => url.clone(),
            None => default_url(env("TRACEGATE_API_ENDPOINT"), "127.0.0.1:8080"),
        };
        Ok(Endpoints {
            otlp_http: checked("--otlp-http", otlp_http)?,
            otlp_grpc: self.otlp_grpc.clone().map(|url| checked("--otlp-grpc", url)).transpose()?,
            api: checked("--api", api)?,
            jaeger_ui: self.jaeger_ui.clone().map(|url| checked("--jaeger-ui", url)).transpose()?,
        })
    }
}

/// `http://` plus the address a gateway listens on; a wildcard address is reached on loopback.
fn default_url(listen: Option<String>, fallback: &str) -> String {
    let listen = listen.filter(|s| !s.trim().is_empty()).unwrap_or_else(|| fallback.to_string());
    let listen = listen.trim();
    let reachable = if let Some(port) = listen.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = listen.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        listen.to_string()
    };
    format!("http://{reachable}")
}

/// A plain-HTTP base URL without a trailing slash.
fn checked(what: &'static str, url: String) -> Result<String, DemoError> {
    let base = url.trim().trim_end_matches('/').to_string();
    match base.parse::<http::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => Ok(base),
        _ => Err(DemoError::InvalidUrl { what, url }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: DemoArgs,
    }

    fn parse(args: &[&str]) -> DemoArgs {
        Cli::try_parse_from(std::iter::once("demo").chain(args.iter().copied())).unwrap().args
    }

    #[test]
    fn defaults_are_the_built_in_configuration_s_addresses() {
        let args = parse(&[]);
        assert_eq!(args.orders, 3);
        assert_eq!(args.timeout, Duration::from_secs(30));
        let endpoints = args.endpoints_with_env(&|_| None).unwrap();
        assert_eq!(
            endpoints,
            Endpoints { otlp_http: "http://127.0.0.1:4318".into(), otlp_grpc: None, api: "http://127.0.0.1:8080".into(), jaeger_ui: None }
        );
    }

    #[test]
    fn defaults_follow_the_environment_the_gateway_reads() {
        let env = |name: &str| match name {
            "TRACEGATE_HTTP_ENDPOINT" => Some("0.0.0.0:14318".to_string()),
            "TRACEGATE_API_ENDPOINT" => Some("127.0.0.1:18080".to_string()),
            _ => None,
        };
        let endpoints = parse(&[]).endpoints_with_env(&env).unwrap();
        assert_eq!(endpoints.otlp_http, "http://127.0.0.1:14318", "a wildcard listener is reached on loopback");
        assert_eq!(endpoints.api, "http://127.0.0.1:18080");
        let given = parse(&["--api", "http://gw:9000/", "--otlp-grpc", "http://gw:4317"]).endpoints_with_env(&env).unwrap();
        assert_eq!(given.api, "http://gw:9000", "a flag wins over the environment");
        assert_eq!(given.otlp_grpc.as_deref(), Some("http://gw:4317"));
    }

    #[test]
    fn bad_urls_and_counts_are_refused() {
        for bad in [["--api", "127.0.0.1:8080"], ["--otlp-http", "https://gw:4318"], ["--jaeger-ui", "not a url"]] {
            assert!(parse(&bad).endpoints_with_env(&|_| None).is_err(), "{bad:?}");
        }
        for bad in [["--orders", "0"], ["--orders", "101"]] {
            assert!(Cli::try_parse_from(std::iter::once("demo").chain(bad)).is_err(), "{bad:?}");
        }
    }
}
