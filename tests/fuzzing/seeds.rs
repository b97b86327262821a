//! The corpora every campaign starts from: valid inputs of each decoder, so mutations land near
//! the paths real traffic takes.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Kind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::{json, Value};
use sha2::Sha256;

fn kv(key: &str, value: Kind) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn s(text: &str) -> Kind {
    Kind::StringValue(text.into())
}

/// What an instrumented Shop API sends: every AnyValue kind, events, links, a status, a
/// credential header for the scrubber, and the attributes order enrichment reads.
pub fn otlp_requests() -> Vec<ExportTraceServiceRequest> {
    let attributes = vec![
        kv("http.request.method", s("POST")),
        kv("url.path", s("/orders/A-1001")),
        kv("order.id", s("A-1001")),
        kv("http.request.header.authorization", s("Bearer secret")),
        kv("http.response.status_code", Kind::IntValue(201)),
        kv("sampled", Kind::BoolValue(true)),
        kv("ratio", Kind::DoubleValue(0.25)),
        kv("blob", Kind::BytesValue(vec![0, 1, 2, 255])),
        kv(
            "tags",
            Kind::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(s("a")) }, AnyValue { value: Some(Kind::IntValue(-1)) }] }),
        ),
        kv(
            "nested",
            Kind::KvlistValue(KeyValueList { values: vec![kv("inner", s("v")), kv("deeper", Kind::KvlistValue(KeyValueList::default()))] }),
        ),
    ];
    let span = Span {
        trace_id: (1..=16).collect(),
        span_id: (1..=8).collect(),
        parent_span_id: (9..=16).collect(),
        trace_state: "vendor=1".into(),
        flags: 0x301,
        name: "POST /orders".into(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: 1_795_168_800_000_000_000,
        end_time_unix_nano: 1_795_168_800_250_000_000,
        attributes,
        events: vec![Event {
            time_unix_nano: 1_795_168_800_100_000_000,
            name: "order saved".into(),
            attributes: vec![kv("db.rows", Kind::IntValue(1))],
            ..Default::default()
        }],
        links: vec![Link {
            trace_id: vec![7; 16],
            span_id: vec![8; 8],
            attributes: vec![kv("constructor.file_id", s("F-9"))],
            ..Default::default()
        }],
        status: Some(Status { message: "created".into(), code: 1 }),
        ..Default::default()
    };
    let full = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s("shop-api")), kv("telemetry.sdk.language", s("java"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.spring-webmvc-6.0".into(),
                    version: "2.9.0".into(),
                    ..Default::default()
                }),
                spans: vec![
                    span.clone(),
                    Span { span_id: vec![9; 8], name: "INSERT orders".into(), kind: SpanKind::Client as i32, ..span },
                ],
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            }],
            schema_url: String::new(),
        }],
    };
    let bare = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans { resource: None, scope_spans: vec![ScopeSpans::default()], schema_url: String::new() }],
    };
    vec![full, bare, ExportTraceServiceRequest::default()]
}

/// Bodies of `POST /v1/order-events`: one event, an array, and the shapes MES sends.
pub fn order_events() -> Vec<Value> {
    let one = json!({"order_id": "A-1001", "service": "mes-api", "status": "manufactured", "stage": "status_change",
                     "time": "2026-11-20T10:00:00Z", "attributes": {"mes.line": "3", "mes.batch": 17, "rush": true, "weight": 1.5}});
    vec![
        one.clone(),
        json!([one, {"order_id": "B-7", "service": "mes-api", "status": "handed_to_courier", "time": "2026-11-20T11:30:00.123456789+01:00"},
               {"order_id": "B-8", "service": "crm-api", "time": "2026-11-21T00:00:00-05:30", "attributes": null},
               {"order_id": "C-1", "service": "mes-api", "stage": "db_save", "status": null}]),
        json!([]),
        json!({"order_id": "A-1", "service": "s"}),
    ]
}

/// Time strings at the edges of the RFC 3339 parser.
pub const TIMES: [&str; 12] = [
    "2026-11-20T10:00:00Z",
    "1970-01-01T00:00:00Z",
    "1970-01-01T00:00:00+00:01",
    "1969-12-31T23:59:59-00:01",
    "2554-07-21T23:34:33.709551615Z",
    "2554-07-21T23:34:33.709551616Z",
    "9999-12-31T23:59:59.999999999-23:59",
    "0000-01-01T00:00:00Z",
    "2024-02-29T12:00:00.1z",
    "2023-02-29T12:00:00Z",
    "2026-11-20t10:00:00.0000000001Z",
    "2026-11-20 10:00:00+99:99",
];

/// The shipped configurations (`config/` and `config/examples/`), read at run time so a new
/// example joins the corpus by itself.
pub fn configs() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut files = vec![root.join("tracegate.yaml")];
    let mut examples: Vec<_> =
        std::fs::read_dir(root.join("examples")).expect("config/examples").filter_map(|e| e.ok()).map(|e| e.path()).collect();
    examples.sort();
    files.extend(examples.into_iter().filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml")));
    let mut texts: Vec<String> = files.iter().map(|p| std::fs::read_to_string(p).expect("a shipped config")).collect();
    texts.push(auth_yaml("${env:TRACEGATE_HMAC_SECRET}", "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"));
    texts
}

/// Environment of the config campaign: fixed, so inputs replay the same.
pub fn config_env(name: &str) -> Option<String> {
    match name {
        "TRACEGATE_HMAC_SECRET" => Some("fuzz-secret-0123456789-0123456789-abcdef".into()),
        "EMPTY" => Some(String::new()),
        "NUMBER" => Some("18446744073709551616".into()),
        "YAML" => Some("{a: [1, *x".into()),
        "HUGE" => Some("9".repeat(10_000)),
        "NESTED" => Some("${env:NESTED}".into()),
        // Key files must exist for a configuration to be valid; any readable file will do.
        "TRACEGATE_OIDC_PUBLIC_KEY" | "TRACEGATE_JOBS_SECRET_FILE" => Some(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml").into()),
        // What the shipped examples require (audit checkpoint key, upstream token).
        _ if ["_KEY", "_TOKEN", "_SECRET", "_PASSWORD"].iter().any(|s| name.ends_with(s)) => {
            Some("fuzz-0123456789-0123456789-0123456789".into())
        }
        _ => None,
    }
}

/// Keys of the JWT campaign: an HMAC secret and a P-256 key pair (kid `ec-1`).
pub struct JwtKeys {
    pub secret: String,
    pub ec_private_pem: String,
    pub ec_public_pem: String,
}

impl JwtKeys {
    pub fn generate() -> JwtKeys {
        let pair = rcgen::KeyPair::generate().expect("a P-256 key");
        JwtKeys {
            secret: "fuzz-secret-0123456789-0123456789-abcdef".into(),
            ec_private_pem: pair.serialize_pem(),
            ec_public_pem: pair.public_key_pem(),
        }
    }
}

pub const ISSUER: &str = "https://sso.shop.test/realms/shop";
pub const OTHER_ISSUER: &str = "https://idp.partner.test/";

/// A configuration with two issuers: one with an HMAC key and one with a kid-bound ES256 key,
/// roles in Keycloak's places.
pub fn auth_yaml(secret: &str, ec_public_pem: &str) -> String {
    let pem = ec_public_pem.trim_end().replace('\n', "\n            ");
    format!(
        r#"receivers:
  otlp: {{auth: jwt, http: {{endpoint: "127.0.0.1:0"}}}}
exporters:
  debug: {{}}
api: {{endpoint: "127.0.0.1:0"}}
auth:
  leeway: 30s
  max_token_lifetime: 12h
  issuers:
    - issuer: "{ISSUER}"
      audience: [tracegate]
      keys:
        - {{algorithm: HS256, secret: "{secret}"}}
      roles:
        claims: [/realm_access/roles, /resource_access/tracegate/roles, /groups]
        map: {{tg-support: support, tg-admin: admin, ingest: service}}
      service_claim: azp
    - issuer: "{OTHER_ISSUER}"
      audience: [tracegate, "api://tracegate"]
      keys:
        - algorithm: ES256
          kid: ec-1
          public_key: |
            {pem}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
"#
    )
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Token headers: the honest ones and what attackers put there.
pub fn jwt_headers() -> Vec<Value> {
    vec![
        json!({"alg": "HS256", "typ": "JWT"}),
        json!({"alg": "ES256", "typ": "JWT", "kid": "ec-1"}),
        json!({"alg": "none"}),
        json!({"alg": "HS256", "kid": "ec-1", "jku": "http://127.0.0.1:1/jwks", "x5u": "http://127.0.0.1:1/x5"}),
        json!({"alg": "ES256", "kid": "ec-1", "jwk": {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}, "x5c": ["MIIB"]}),
        json!({"alg": "HS256", "kid": 18446744073709551615u64, "crit": ["exp"], "cty": {"nested": [[[1]]]}}),
        json!({"alg": "RS256", "kid": "ec-1", "b64": false}),
        json!({"alg": ["HS256"], "typ": 1e308}),
    ]
}

/// Claims that pass every check (for `iss`), and their neighbours.
pub fn jwt_claims(iss: &str) -> Vec<Value> {
    let now = now();
    let good = json!({"iss": iss, "aud": "tracegate", "sub": "ada", "exp": now + 300, "iat": now - 10, "nbf": now - 10,
                      "azp": "shop-api", "preferred_username": "ada",
                      "realm_access": {"roles": ["offline_access", "tg-support"]},
                      "resource_access": {"tracegate": {"roles": ["tg-admin", "ingest"]}}, "groups": "tg-support ingest"});
    let mut variants = vec![good.clone()];
    for (key, value) in [
        ("exp", json!(u64::MAX)),
        ("exp", json!(1e300)),
        ("exp", json!(-1)),
        ("iat", json!(u64::MAX)),
        ("nbf", json!(-1e300)),
        ("aud", json!(["other", "tracegate", 7])),
        ("realm_access", json!({"roles": "tg-admin"})),
        ("groups", json!({"a": [[["tg-admin"]]]})),
        ("sub", json!("")),
    ] {
        let mut claims = good.clone();
        claims[key] = value;
        variants.push(claims);
    }
    variants
}

/// `base64url(header).base64url(claims).signature`, the signature made with the key the header's
/// `alg` names when there is one (so mutated claims still reach the checks after the signature).
pub fn sign(header: &[u8], claims: &[u8], keys: &JwtKeys, alg: Option<&str>) -> String {
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let signature = match alg {
        Some("HS256") => {
            let mut mac = Hmac::<Sha256>::new_from_slice(keys.secret.as_bytes()).expect("any key length");
            mac.update(input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        Some("ES256") => {
            let key = jsonwebtoken::EncodingKey::from_ec_pem(keys.ec_private_pem.as_bytes()).expect("the generated key");
            let text = jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::ES256).expect("ES256 signs");
            URL_SAFE_NO_PAD.decode(text).expect("base64url from jsonwebtoken")
        }
        _ => b"not-a-signature".to_vec(),
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// JWK sets as identity providers publish them.
pub fn jwks() -> Vec<Value> {
    let pair = rcgen::KeyPair::generate().expect("a P-256 key");
    let raw = pair.public_key_raw(); // 0x04 || x || y
    let (x, y) = (URL_SAFE_NO_PAD.encode(&raw[1..33]), URL_SAFE_NO_PAD.encode(&raw[33..65]));
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("an Ed25519 key");
    let n = URL_SAFE_NO_PAD.encode((0..256).map(|i| (i * 7 + 1) as u8).collect::<Vec<u8>>());
    vec![
        json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig", "alg": "ES256", "x": x, "y": y},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": URL_SAFE_NO_PAD.encode(ed.public_key_raw())},
            {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "n": n, "e": "AQAB"},
        ]}),
        json!({"keys": [
            {"kty": "oct", "kid": "s", "k": "c2VjcmV0", "alg": "HS256"},
            {"kty": "EC", "crv": "P-384", "kid": "ec-2", "use": "enc", "x": x, "y": y},
            {"kty": "RSA", "kid": "weird", "alg": "PS512", "n": "AQAB", "e": "AQAB", "x5c": ["MIIB"]},
        ]}),
        json!({"keys": []}),
    ]
}
