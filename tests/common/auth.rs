#![allow(dead_code)]
//! Auth fixtures: keys and tokens minted by PyJWT (tests/jwt_helper.py), and a gateway with four
//! issuers shaped like Keycloak, Entra ID, Okta and Auth0.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde_json::{json, Value};

pub const AUTH0_SECRET: &str = "auth0-test-secret-0123456789-abcdefghijklmnop";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idp {
    Keycloak,
    Entra,
    Okta,
    Auth0,
}

pub const IDPS: [Idp; 4] = [Idp::Keycloak, Idp::Entra, Idp::Okta, Idp::Auth0];

impl Idp {
    pub fn issuer(self) -> &'static str {
        match self {
            Idp::Keycloak => "https://sso.shop.test/realms/shop",
            Idp::Entra => "https://login.microsoftonline.com/0000-tenant/v2.0",
            Idp::Okta => "https://shop.okta.test/oauth2/default",
            Idp::Auth0 => "https://shop.eu.auth0.test/",
        }
    }

    pub fn audience(self) -> &'static str {
        match self {
            Idp::Entra => "api://tracegate",
            _ => "tracegate",
        }
    }

    /// The claims holding `roles` (tracegate role names) the way this IdP writes them.
    fn role_claims(self, roles: &[&str]) -> Value {
        let mapped: Vec<String> = roles
            .iter()
            .map(|r| match self {
                Idp::Keycloak => format!("tg-{r}"),
                Idp::Entra => format!("Tracegate.{}{}", r[..1].to_uppercase(), &r[1..]),
                Idp::Okta => format!("tracegate-{r}"),
                Idp::Auth0 => r.to_string(),
            })
            .collect();
        match self {
            // Keycloak: realm roles for people, client roles for services.
            Idp::Keycloak => {
                let mut realm = vec!["offline_access".to_string()];
                realm.extend(mapped.iter().cloned());
                json!({"realm_access": {"roles": realm}, "resource_access": {"tracegate": {"roles": mapped}}})
            }
            Idp::Entra => json!({"roles": mapped}),
            // Okta: a space-separated string works as well as an array.
            Idp::Okta => json!({"groups": mapped.join(" ")}),
            Idp::Auth0 => json!({"https://tracegate.shop.test/roles": mapped}),
        }
    }
}

pub fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

fn helper() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jwt_helper.py")
}

/// Key pairs generated once per test binary.
pub struct Keys {
    pub dir: PathBuf,
    pub paths: Value,
}

impl Keys {
    pub fn private(&self, name: &str) -> String {
        self.paths[name]["private"].as_str().unwrap().to_string()
    }
    pub fn public(&self, name: &str) -> String {
        self.paths[name]["public"].as_str().unwrap().to_string()
    }
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tracegate-auth-keys-{}", std::process::id()));
        let out = Command::new(python()).arg(helper()).arg("keys").arg(&dir).output().expect("python runs");
        assert!(out.status.success(), "jwt_helper keys failed: {}", String::from_utf8_lossy(&out.stderr));
        Keys { dir, paths: serde_json::from_slice(&out.stdout).unwrap() }
    })
}

/// Mints every spec with PyJWT in one Python process.
pub fn mint(specs: &[Value]) -> Vec<String> {
    let mut child = Command::new(python())
        .arg(helper())
        .arg("mint")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(serde_json::to_string(specs).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "jwt_helper mint failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A valid token's claims for `sub` with tracegate `roles`, in the IdP's shape.
pub fn claims(idp: Idp, sub: &str, roles: &[&str]) -> Value {
    let mut c = json!({"iss": idp.issuer(), "aud": idp.audience(), "sub": sub, "iat": now(), "exp": now() + 300,
                       "preferred_username": format!("{sub}@shop.test")});
    for (k, v) in idp.role_claims(roles).as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// The spec that signs `claims` with the IdP's configured key.
pub fn spec(idp: Idp, claims: Value) -> Value {
    let k = keys();
    match idp {
        Idp::Keycloak => json!({"alg": "RS256", "key_file": k.private("rsa"), "headers": {"kid": "kc-1"}, "claims": claims}),
        Idp::Entra => json!({"alg": "ES256", "key_file": k.private("ec"), "claims": claims}),
        Idp::Okta => json!({"alg": "EdDSA", "key_file": k.private("ed"), "claims": claims}),
        Idp::Auth0 => json!({"alg": "HS256", "secret": AUTH0_SECRET, "claims": claims}),
    }
}

/// One token for `sub` with `roles` from `idp`.
pub fn token(idp: Idp, sub: &str, roles: &[&str]) -> String {
    mint(&[spec(idp, claims(idp, sub, roles))]).remove(0)
}

/// A service token: role `service`, identity (`azp`) `service`.
pub fn service_claims(idp: Idp, service: &str) -> Value {
    let mut c = claims(idp, &format!("service-account-{service}"), &["service"]);
    c["azp"] = json!(service);
    c
}

/// The `auth:` section trusting the four IdPs.
pub fn auth_yaml() -> String {
    let k = keys();
    format!(
        r#"
auth:
  leeway: 5s
  max_token_lifetime: 1h
  issuers:
    - issuer: "{kc}"
      audience: [tracegate]
      keys: [{{algorithm: RS256, kid: kc-1, public_key_file: "{rsa}"}}]
      roles:
        claims: [/realm_access/roles, /resource_access/tracegate/roles]
        map: {{tg-support: support, tg-admin: admin, tg-service: service}}
    - issuer: "{entra}"
      audience: ["api://tracegate"]
      keys: [{{algorithm: ES256, public_key_file: "{ec}"}}]
      roles:
        claims: [/roles]
        map: {{Tracegate.Support: support, Tracegate.Admin: admin, Tracegate.Service: service}}
    - issuer: "{okta}"
      audience: [tracegate]
      keys: [{{algorithm: EdDSA, public_key_file: "{ed}"}}]
      roles:
        claims: [/groups]
        map: {{tracegate-support: support, tracegate-admin: admin, tracegate-service: service}}
    - issuer: "{auth0}"
      audience: [tracegate]
      keys: [{{algorithm: HS256, secret: "{secret}"}}]
      roles:
        claims: ["/https:~1~1tracegate.shop.test~1roles"]
"#,
        kc = Idp::Keycloak.issuer(),
        entra = Idp::Entra.issuer(),
        okta = Idp::Okta.issuer(),
        auth0 = Idp::Auth0.issuer(),
        rsa = k.public("rsa"),
        ec = k.public("ec"),
        ed = k.public("ed"),
        secret = AUTH0_SECRET,
    )
}

/// A whole gateway configuration with auth on the API and `auth: jwt` on the receiver, the
/// audit log at `{data}/audit.jsonl`.
pub fn secured_config() -> String {
    format!(
        r#"
receivers:
  otlp:
    auth: jwt
    grpc: {{endpoint: "127.0.0.1:0"}}
    http: {{endpoint: "127.0.0.1:0"}}
exporters:
  local: {{type: embedded, path: "{{data}}", batch: {{max_wait: 5ms}}}}
api: {{endpoint: "127.0.0.1:0"}}
audit:
  path: "{{data}}/audit.jsonl"
  checkpoint_key: "audit-checkpoint-key-0123456789abcdef"
  checkpoint_every: 5
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [local]}}
{}"#,
        auth_yaml()
    )
}

/// One span (`POST /orders`) of `service`: what the identity tests send on every OTLP door.
pub fn service_request(service: &str) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue { value: Some(any_value::Value::StringValue(service.into())) }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![7; 16],
                    span_id: vec![1; 8],
                    name: "POST /orders".into(),
                    start_time_unix_nano: 1,
                    end_time_unix_nano: 2,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
