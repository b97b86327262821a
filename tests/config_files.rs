//! Configuration files as a platform team meets them: every shipped file parses, every mistake
//! is reported with its exact path in the file, and `tracegate validate` says so on the command
//! line.

use std::path::{Path, PathBuf};
use std::process::Command;

use tracegate::config::{ConfigIssue, ExporterConfig};
use tracegate::Config;

/// The environment as seen by a test: only the given variables are set.
fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
}

/// Parses `yaml` with an empty environment and returns its issues; panics if it is valid.
fn issues(yaml: &str) -> Vec<ConfigIssue> {
    match Config::from_yaml_with_env(yaml, &env_of(&[])) {
        Ok(_) => panic!("expected configuration errors in:\n{yaml}"),
        Err(e) => e.issues,
    }
}

/// The one issue at `path`; panics listing all issues if there is none or several.
fn issue_at<'a>(issues: &'a [ConfigIssue], path: &str) -> &'a ConfigIssue {
    let found: Vec<&ConfigIssue> = issues.iter().filter(|i| i.path == path).collect();
    assert_eq!(found.len(), 1, "expected one issue at {path:?}, got {issues:#?}");
    found[0]
}

const RECEIVER: &str = r#"
receivers:
  otlp:
    grpc: {endpoint: "127.0.0.1:0"}
"#;

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(path);
        }
    }
}

#[test]
fn every_shipped_configuration_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    files.sort();
    assert!(!files.is_empty(), "no YAML files under {}", root.display());
    assert!(files.iter().any(|f| f.ends_with("config/tracegate.yaml")), "the built-in default is missing: {files:?}");
    let examples = files.iter().filter(|f| f.parent().is_some_and(|p| p.ends_with("config/examples"))).count();
    assert!(examples >= 3, "expected the shipped examples under config/examples, found {examples}: {files:?}");

    let mut failures = Vec::new();
    // Deployment examples take the audit key from the environment, and have no default for it.
    let key_files = example_files();
    let env = |name: &str| match name {
        "TRACEGATE_AUDIT_CHECKPOINT_KEY" => Some(AUDIT_KEY.to_string()),
        "TRACEGATE_OIDC_PUBLIC_KEY" => Some(key_files.join("oidc-public.pem").display().to_string()),
        "TRACEGATE_JOBS_SECRET_FILE" => Some(key_files.join("jobs-hmac-secret").display().to_string()),
        "TRACEGATE_OIDC_CLIENT_SECRET" => Some("an-oidc-client-secret-for-the-config-tests".to_string()),
        other => std::env::var(other).ok(),
    };
    for file in &files {
        match Config::from_yaml_with_env(&std::fs::read_to_string(file).unwrap(), &env) {
            Ok(config) => {
                if config.service.pipelines.is_empty() {
                    failures.push(format!("{}: no pipeline", file.display()));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", file.display())),
        }
    }
    assert!(failures.is_empty(), "{} of {} files do not parse:\n{}", failures.len(), files.len(), failures.join("\n"));
}

const AUDIT_KEY: &str = "an-audit-key-for-the-config-tests-0123456789";

/// The key files the deployment examples name (through TRACEGATE_OIDC_PUBLIC_KEY and
/// TRACEGATE_JOBS_SECRET_FILE): they must exist for a configuration to validate.
fn example_files() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tracegate-config-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("oidc-public.pem"), "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n").unwrap();
    std::fs::write(dir.join("jobs-hmac-secret"), "a-jobs-secret-of-more-than-32-bytes-0123456789\n").unwrap();
    dir
}

#[test]
fn validate_names_missing_key_files_and_unwritable_places() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
receivers: {{otlp: {{auth: jwt, http: {{endpoint: "127.0.0.1:4318"}}}}}}
exporters: {{local: {{type: embedded, path: /proc/version/data}}}}
auth:
  issuers:
    - issuer: https://sso.shop.test
      audience: [tracegate]
      keys: [{{algorithm: RS256, public_key_file: {missing}}}]
audit: {{path: /proc/version/audit.jsonl, checkpoint_key: "0123456789abcdef0123456789abcdef"}}
service: {{pipelines: {{traces: {{receivers: [otlp], exporters: [local]}}}}}}
"#,
        missing = dir.path().join("oidc-public.pem").display()
    );
    let found = issues(&yaml);
    let mut paths: Vec<&str> = found.iter().map(|i| i.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["audit.path", "auth.issuers[0].keys[0].public_key_file", "exporters.local.path"], "{found:#?}");
    assert!(found.iter().any(|i| i.message.ends_with("oidc-public.pem does not exist")), "{found:#?}");
}

#[test]
fn no_example_falls_back_to_a_published_audit_key() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        if !text.contains("\naudit:") {
            continue;
        }
        let error = Config::from_yaml_with_env(&text, &env_of(&[])).expect_err("an audit log without its key must not start").to_string();
        assert!(
            error.contains("audit.checkpoint_key: environment variable TRACEGATE_AUDIT_CHECKPOINT_KEY is not set"),
            "{}: {error}",
            file.display()
        );
    }
    let keyless = "audit: {path: /tmp/audit.jsonl}\nexporters: {d: {type: debug}}\nreceivers: {otlp: {http: {}}}\nservice: {pipelines: {t: {receivers: [otlp], exporters: [d]}}}\n";
    let error = Config::from_yaml_with_env(keyless, &env_of(&[])).unwrap_err().to_string();
    assert!(
        error.contains("audit.checkpoint_key: an audit log needs a key") && error.contains("TRACEGATE_AUDIT_CHECKPOINT_KEY"),
        "{error}"
    );
}

#[test]
fn the_jaeger_example_takes_its_endpoint_from_the_environment() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/jaeger-and-embedded.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let endpoint = |config: &Config| match &config.exporters["jaeger"] {
        ExporterConfig::Otlp(c) => c.endpoint.clone(),
        other => panic!("jaeger is an otlp exporter, not {}", other.kind()),
    };
    let files = example_files();
    let env = |jaeger: Option<&'static str>| {
        let files = files.clone();
        move |name: &str| match name {
            "JAEGER_ENDPOINT" => jaeger.map(str::to_string),
            "TRACEGATE_AUDIT_CHECKPOINT_KEY" => Some(AUDIT_KEY.to_string()),
            "TRACEGATE_OIDC_PUBLIC_KEY" => Some(files.join("oidc-public.pem").display().to_string()),
            "TRACEGATE_JOBS_SECRET_FILE" => Some(files.join("jobs-hmac-secret").display().to_string()),
            _ => None,
        }
    };
    let defaults = Config::from_yaml_with_env(&text, &env(None)).unwrap();
    assert_eq!(endpoint(&defaults), "http://jaeger:4317");
    let set = Config::from_yaml_with_env(&text, &env(Some("https://jaeger.tracing.svc:4317"))).unwrap();
    assert_eq!(endpoint(&set), "https://jaeger.tracing.svc:4317");
}

#[test]
fn a_typo_in_a_key_is_reported_at_that_key() {
    let yaml = format!(
        r#"{RECEIVER}
exporters:
  jaeger:
    type: otlp
    endpoitn: "http://jaeger:4317"
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [jaeger]}}
"#
    );
    let issues = issues(&yaml);
    let typo = issue_at(&issues, "exporters.jaeger.endpoitn");
    assert!(typo.message.starts_with("unknown field `endpoitn`"), "{typo}");
    assert!(typo.message.contains("`endpoint`"), "the message lists the known keys: {typo}");
}

#[test]
fn typos_deeper_down_and_at_the_top_are_reported_at_their_keys() {
    let nested = format!(
        r#"{RECEIVER}
exporters:
  jaeger:
    type: otlp
    endpoint: "http://jaeger:4317"
    retry_on_failure: {{max_elapsd: 5m}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [jaeger]}}
"#
    );
    let issues_nested = issues(&nested);
    let typo = issue_at(&issues_nested, "exporters.jaeger.retry_on_failure.max_elapsd");
    assert!(typo.message.starts_with("unknown field `max_elapsd`"), "{typo}");

    let receiver = r#"
receivers:
  otlp:
    http: {endpont: "127.0.0.1:4318"}
exporters:
  debug: {}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [debug]}
"#;
    let issues_receiver = issues(receiver);
    assert!(issue_at(&issues_receiver, "receivers.otlp.http.endpont").message.starts_with("unknown field `endpont`"));

    let top = format!("{RECEIVER}\nexporters: {{debug: {{}}}}\nservce:\n  pipelines: {{}}\n");
    let issues_top = issues(&top);
    assert!(issue_at(&issues_top, "servce").message.starts_with("unknown field `servce`"), "{issues_top:#?}");
}

#[test]
fn an_unknown_component_in_a_pipeline_is_reported_at_its_position() {
    let yaml = format!(
        r#"{RECEIVER}
exporters:
  jaeger: {{type: otlp, endpoint: "http://jaeger:4317"}}
service:
  pipelines:
    traces: {{receivers: [otlp, otlp/mes], exporters: [jeager, jaeger]}}
"#
    );
    let issues = issues(&yaml);
    assert_eq!(issues.len(), 2, "{issues:#?}");
    let exporter = issue_at(&issues, "service.pipelines.traces.exporters[0]");
    assert_eq!(exporter.message, r#"unknown exporter "jeager" (defined: jaeger)"#);
    let receiver = issue_at(&issues, "service.pipelines.traces.receivers[1]");
    assert_eq!(receiver.message, r#"unknown receiver "otlp/mes" (defined: otlp)"#);
}

#[test]
fn a_pipeline_without_exporters_is_reported() {
    let empty = format!("{RECEIVER}\nservice:\n  pipelines:\n    traces: {{receivers: [otlp], exporters: []}}\n");
    let issues_empty = issues(&empty);
    assert_eq!(issues_empty.len(), 1, "{issues_empty:#?}");
    assert_eq!(issue_at(&issues_empty, "service.pipelines.traces.exporters").message, "a pipeline needs at least one exporter");

    let omitted = format!("{RECEIVER}\nservice:\n  pipelines:\n    traces: {{receivers: [otlp]}}\n");
    let issues_omitted = issues(&omitted);
    assert_eq!(issues_omitted.len(), 1, "{issues_omitted:#?}");
    assert!(issues_omitted[0].path.starts_with("service.pipelines.traces"), "{issues_omitted:#?}");
    assert!(issues_omitted[0].message.contains("exporters"), "{issues_omitted:#?}");
}

#[test]
fn two_receivers_on_one_port_is_reported_at_the_second() {
    let yaml = r#"
receivers:
  otlp:
    grpc: {endpoint: "127.0.0.1:14317"}
  otlp/mes:
    http: {endpoint: "0.0.0.0:14317"}
exporters:
  debug: {}
service:
  pipelines:
    traces: {receivers: [otlp, otlp/mes], exporters: [debug]}
"#;
    let issues = issues(yaml);
    assert_eq!(issues.len(), 1, "{issues:#?}");
    assert_eq!(issue_at(&issues, "receivers.otlp/mes.http.endpoint").message, "port 14317 is already used by receivers.otlp.grpc.endpoint");
}

#[test]
fn a_missing_environment_variable_is_reported_at_its_value() {
    let yaml = format!(
        r#"{RECEIVER}
exporters:
  jaeger: {{type: otlp, endpoint: "${{env:TG_TEST_JAEGER_ENDPOINT}}"}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [jaeger]}}
"#
    );
    let issues = issues(&yaml);
    let missing = issues.iter().find(|i| i.message.contains("TG_TEST_JAEGER_ENDPOINT")).unwrap_or_else(|| panic!("{issues:#?}"));
    assert_eq!(missing.path, "exporters.jaeger.endpoint");
    assert_eq!(
        missing.message,
        "environment variable TG_TEST_JAEGER_ENDPOINT is not set and has no default (use ${env:TG_TEST_JAEGER_ENDPOINT:-default})"
    );
}

#[test]
fn environment_references_are_substituted_with_value_or_default() {
    let yaml = r#"
receivers:
  otlp:
    http:
      endpoint: "${env:TG_HTTP_ENDPOINT:-127.0.0.1:4318}"
      max_request_body_size: ${env:TG_BODY_LIMIT:-1048576}
exporters:
  jaeger:
    type: otlp
    endpoint: "http://${env:TG_JAEGER_HOST:-jaeger}:${env:TG_JAEGER_PORT:-4317}"
    headers: {x-scope-orgid: "${env:TG_TENANT:-shop}"}
    sending_queue: {queue_size: "${env:TG_QUEUE:-5000}"}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [jaeger]}
"#;
    let read = |config: &Config| {
        #[allow(irrefutable_let_patterns)]
        let tracegate::config::ReceiverConfig::Otlp(r) = &config.receivers["otlp"] else {
            panic!("otlp receiver")
        };
        let http = r.http.as_ref().unwrap();
        let ExporterConfig::Otlp(e) = &config.exporters["jaeger"] else { panic!("otlp exporter") };
        (
            http.endpoint.clone(),
            http.max_request_body_size.0,
            e.endpoint.clone(),
            e.headers["x-scope-orgid"].clone(),
            e.sending_queue.queue_size,
        )
    };

    let defaults = Config::from_yaml_with_env(yaml, &env_of(&[])).unwrap();
    assert_eq!(read(&defaults), ("127.0.0.1:4318".into(), 1_048_576, "http://jaeger:4317".into(), "shop".into(), 5000));

    let set = Config::from_yaml_with_env(
        yaml,
        &env_of(&[
            ("TG_HTTP_ENDPOINT", "0.0.0.0:14318"),
            ("TG_BODY_LIMIT", "4MiB"),
            ("TG_JAEGER_HOST", "jaeger.tracing"),
            ("TG_QUEUE", "777"),
            ("TG_TENANT", "crm"),
        ]),
    )
    .unwrap();
    assert_eq!(read(&set), ("0.0.0.0:14318".into(), 4 << 20, "http://jaeger.tracing:4317".into(), "crm".into(), 777));
}

#[test]
fn typos_and_wrong_types_in_one_section_are_reported_in_one_run() {
    let yaml = r#"
receivers:
  otlp:
    grpc: {endpoint: "127.0.0.1:4317", max_recv_msg_sise: 4MiB}
    htp: {endpoint: "127.0.0.1:4318"}
exporters:
  jaeger:
    type: otlp
    endpont: "http://jaeger:4317"
    timeout: soon
    compresion: gzip
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [jaeger]}
"#;
    let issues = issues(yaml);
    let mut paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "exporters.jaeger.compresion",
            "exporters.jaeger.endpont",
            "exporters.jaeger.timeout",
            "receivers.otlp.grpc.max_recv_msg_sise",
            "receivers.otlp.htp",
        ],
        "{issues:#?}"
    );
}

#[test]
fn yaml_mistakes_say_what_to_fix() {
    let tab = "receivers:\n  otlp:\n\tgrpc: {}\nservice: {pipelines: {}}\n";
    let found = issues(tab);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].message.contains("tab") && found[0].message.contains("spaces"), "{found:#?}");
    assert!(found[0].path.starts_with("line 3"), "{found:#?}");
    let indented = "receivers:\n  otlp:\n    grpc:\n      endpoint: 127.0.0.1:4317\n     http: {}\n";
    let found = issues(indented);
    assert!(found[0].message.contains("indentation"), "{found:#?}");
}

#[test]
fn several_errors_are_reported_at_once() {
    let yaml = r#"
receivers:
  otlp:
    grpc: {endpoint: "127.0.0.1:4317"}
    http: {endpoint: "127.0.0.1:4318", max_decompression_ratio: 0}
exporters:
  jaeger:
    type: otlp
    endpoint: "jaeger:4317"
    sending_queue: {queue_size: 0}
  local: {type: embedded, path: ./data, retention: 0s}
api:
  endpoint: "localhost"
service:
  pipelines:
    traces: {receivers: [otlp, otlp/missing], processors: [batch], exporters: [jaeger, local]}
"#;
    let issues = issues(yaml);
    let mut paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "api.endpoint",
            "exporters.jaeger.endpoint",
            "exporters.jaeger.sending_queue.queue_size",
            "exporters.local.retention",
            "receivers.otlp.http.max_decompression_ratio",
            "service.pipelines.traces.processors[0]",
            "service.pipelines.traces.receivers[1]",
        ],
        "{issues:#?}"
    );
    assert_eq!(
        issue_at(&issues, "exporters.jaeger.endpoint").message,
        r#""jaeger:4317" needs a scheme: http://host:port or https://host:port"#
    );
    assert_eq!(
        issue_at(&issues, "api.endpoint").message,
        r#""localhost" has no port: write IP:port (e.g. 127.0.0.1:4317, or 0.0.0.0:4317 for every interface)"#
    );
}

/// One mistake should read as one error: a component that fails to parse is still defined, so
/// the pipelines that name it must not add "unknown exporter" (or "unknown receiver"), and an
/// unresolved `${env:...}` must not be reported a second time as an invalid value.
#[test]
fn one_mistake_is_reported_once() {
    let typo = format!(
        r#"{RECEIVER}
exporters:
  jaeger: {{type: otlp, endpoitn: "http://jaeger:4317"}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [jaeger]}}
"#
    );
    let bad_size = r#"
receivers:
  otlp:
    http: {endpoint: "127.0.0.1:0", max_request_body_size: 5 parsecs}
exporters:
  debug: {}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [debug]}
"#;
    let missing_env = format!(
        r#"{RECEIVER}
exporters:
  jaeger: {{type: otlp, endpoint: "${{env:TG_TEST_JAEGER_ENDPOINT}}"}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [jaeger]}}
"#
    );
    for (yaml, path) in [
        (typo.as_str(), "exporters.jaeger.endpoitn"),
        (bad_size, "receivers.otlp.http.max_request_body_size"),
        (missing_env.as_str(), "exporters.jaeger.endpoint"),
    ] {
        let issues = issues(yaml);
        assert_eq!(issues.len(), 1, "one mistake at {path}, but {} errors: {issues:#?}", issues.len());
        assert_eq!(issues[0].path, path);
    }
}

/// Runs `tracegate validate --config <file>` and returns exit code, stdout and stderr.
fn validate_cli(file: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tracegate"))
        .args(["validate", "--config"])
        .arg(file)
        .env_remove("JAEGER_ENDPOINT")
        .env("TRACEGATE_AUDIT_CHECKPOINT_KEY", AUDIT_KEY)
        .env("TRACEGATE_OIDC_PUBLIC_KEY", example_files().join("oidc-public.pem"))
        .env("TRACEGATE_JOBS_SECRET_FILE", example_files().join("jobs-hmac-secret"))
        .env("TRACEGATE_OIDC_CLIENT_SECRET", "an-oidc-client-secret-for-the-config-tests")
        .output()
        .expect("runs the tracegate binary");
    (out.status.code().expect("exited, not killed"), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn validate_prints_a_summary_of_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("good.yaml");
    std::fs::write(
        &file,
        r#"
receivers:
  otlp:
    grpc: {endpoint: "127.0.0.1:4317"}
    http: {endpoint: "127.0.0.1:4318"}
exporters:
  jaeger: {type: otlp, endpoint: "http://jaeger:4317"}
  local: {type: embedded, path: ./data}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [jaeger, local]}
"#,
    )
    .unwrap();
    let (code, stdout, stderr) = validate_cli(&file);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(
        stdout,
        format!(
            "{}: valid\npipeline traces: receivers [otlp] -> processors [-] -> exporters [jaeger (otlp), local (embedded)]\napi: 127.0.0.1:8080\nread API backend: local\n",
            file.display()
        )
    );
    assert_eq!(stderr, "");
}

#[test]
fn validate_accepts_every_shipped_example() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    assert!(!files.is_empty());
    for file in files {
        let (code, stdout, stderr) = validate_cli(&file);
        assert_eq!(code, 0, "{}:\n{stderr}", file.display());
        assert!(stdout.lines().any(|l| l.starts_with("pipeline ")), "{stdout}");
    }
}

#[test]
fn validate_prints_every_error_with_its_path_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        r#"
receivers:
  otlp:
    grpc: {endpoint: "127.0.0.1:4317"}
exporters:
  jaeger: {type: otlp, endpoint: "jaeger:4317"}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [jaeger, elastic]}
"#,
    )
    .unwrap();
    let (code, stdout, stderr) = validate_cli(&file);
    assert_ne!(code, 0, "a bad file must fail validation; stdout:\n{stdout}");
    assert_eq!(stdout, "");
    let lines: Vec<&str> = stderr.lines().map(str::trim).collect();
    assert!(
        lines.contains(&r#"exporters.jaeger.endpoint: "jaeger:4317" needs a scheme: http://host:port or https://host:port"#),
        "stderr:\n{stderr}"
    );
    assert!(lines.contains(&r#"service.pipelines.traces.exporters[1]: unknown exporter "elastic" (defined: jaeger)"#), "stderr:\n{stderr}");
    assert!(stderr.contains("2 configuration errors"), "stderr:\n{stderr}");
}

#[test]
fn validate_fails_on_a_missing_file() {
    let (code, stdout, stderr) = validate_cli(Path::new("/nonexistent/tracegate.yaml"));
    assert_ne!(code, 0);
    assert_eq!(stdout, "");
    assert!(stderr.contains("/nonexistent/tracegate.yaml: cannot read"), "stderr:\n{stderr}");
}

/// An audit mirror and two exporters whose `retry_on_failure` is `MIRROR`, `OTLP` and `ES`;
/// `{data}` is a writable directory.
fn retry_yaml(data: &Path, mirror: &str, otlp: &str, es: &str) -> String {
    format!(
        r#"
receivers:
  otlp:
    grpc: {{endpoint: "127.0.0.1:4317"}}
exporters:
  jaeger: {{type: otlp, endpoint: "http://jaeger:4317", retry_on_failure: {otlp}}}
  archive: {{type: elasticsearch, endpoints: ["http://es:9200"], dead_letter_path: "{data}/dead.jsonl", retry_on_failure: {es}}}
audit:
  path: "{data}/audit.jsonl"
  checkpoint_key: "{AUDIT_KEY}"
  elasticsearch: {{exporter: archive, retry_on_failure: {mirror}}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [jaeger, archive]}}
"#,
        data = data.display()
    )
}

#[test]
fn a_retry_on_failure_with_some_keys_takes_the_others_from_the_exporters_defaults() {
    use std::time::Duration;
    use tracegate::shared::RetryConfig;

    let dir = tempfile::tempdir().unwrap();
    let yaml = retry_yaml(dir.path(), "{max_elapsed_time: 10m}", "{initial_interval: 1s}", "{multiplier: 3}");
    let config = Config::from_yaml_with_env(&yaml, &env_of(&[])).unwrap_or_else(|e| panic!("{e}"));
    let default = RetryConfig::default();
    let mirror = &config.audit.elasticsearch.as_ref().expect("the mirror is configured").retry_on_failure;
    assert_eq!(mirror.max_elapsed_time, Duration::from_secs(600));
    assert_eq!(
        (mirror.enabled, mirror.initial_interval, mirror.max_interval, mirror.multiplier, mirror.randomization_factor),
        (default.enabled, default.initial_interval, default.max_interval, default.multiplier, default.randomization_factor),
        "the keys the mirror's retry_on_failure leaves out are the exporters' defaults"
    );
    let Some(ExporterConfig::Otlp(otlp)) = config.exporters.get("jaeger") else { panic!("jaeger is an otlp exporter") };
    let otlp = &otlp.retry_on_failure;
    assert_eq!(otlp.initial_interval, Duration::from_secs(1));
    assert_eq!(
        (otlp.enabled, otlp.max_interval, otlp.max_elapsed_time, otlp.multiplier, otlp.randomization_factor),
        (default.enabled, default.max_interval, default.max_elapsed_time, default.multiplier, default.randomization_factor)
    );
    let Some(ExporterConfig::Elasticsearch(es)) = config.exporters.get("archive") else { panic!("archive is an elasticsearch exporter") };
    let es = &es.retry_on_failure;
    assert_eq!(es.multiplier, 3.0);
    assert_eq!(
        (es.enabled, es.initial_interval, es.max_interval, es.max_elapsed_time, es.randomization_factor),
        (default.enabled, default.initial_interval, default.max_interval, default.max_elapsed_time, default.randomization_factor)
    );

    // With no retry_on_failure at all the mirror keeps its own, quicker start (docs/security.md).
    let yaml = yaml.replace(", retry_on_failure: {max_elapsed_time: 10m}", "");
    let config = Config::from_yaml_with_env(&yaml, &env_of(&[])).unwrap_or_else(|e| panic!("{e}"));
    let mirror = &config.audit.elasticsearch.as_ref().unwrap().retry_on_failure;
    assert_eq!(
        (mirror.initial_interval, mirror.multiplier, mirror.max_interval),
        (Duration::from_millis(500), 2.0, Duration::from_secs(30))
    );
}

#[test]
fn validate_refuses_a_retry_that_would_spin_or_shrink() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("retry.yaml");
    std::fs::write(
        &file,
        retry_yaml(
            dir.path(),
            "{initial_interval: 0s, multiplier: 0.5}",
            "{initial_interval: 0s}",
            "{initial_interval: 10s, max_interval: 1s, randomization_factor: 2}",
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = validate_cli(&file);
    assert_ne!(code, 0, "a retry that spins must fail validation; stdout:\n{stdout}");
    assert_eq!(stdout, "");
    let lines: Vec<&str> = stderr.lines().map(str::trim).collect();
    for expected in [
        "audit.elasticsearch.retry_on_failure.initial_interval: must be greater than 0 (0 would retry at once, in a busy loop)",
        "audit.elasticsearch.retry_on_failure.multiplier: must be at least 1.0 (a delay never shrinks), got 0.5",
        "exporters.jaeger.retry_on_failure.initial_interval: must be greater than 0 (0 would retry at once, in a busy loop)",
        "exporters.archive.retry_on_failure.max_interval: must be at least initial_interval (1s < 10s)",
        "exporters.archive.retry_on_failure.randomization_factor: must be between 0 and 1, got 2",
    ] {
        assert!(lines.contains(&expected), "missing {expected:?} in stderr:\n{stderr}");
    }
    assert!(stderr.contains("5 configuration errors"), "stderr:\n{stderr}");

    // The same settings with retry turned off need no interval.
    let off =
        retry_yaml(dir.path(), "{enabled: false, initial_interval: 0s}", "{enabled: false, initial_interval: 0s}", "{enabled: false}");
    Config::from_yaml_with_env(&off, &env_of(&[])).unwrap_or_else(|e| panic!("retry off needs no interval: {e}"));
}
