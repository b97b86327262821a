//! The `auth:` section: who may call tracegate, and how their tokens are checked.
//!
//! ```yaml
//! auth:
//!   leeway: 30s                 # clock skew allowed on exp / nbf (at most 60s)
//!   max_token_lifetime: 12h     # a token valid for longer than this is refused
//!   issuers:
//!     - issuer: https://sso.example.com/realms/shop
//!       audience: [tracegate]
//!       keys:
//!         - {algorithm: RS256, public_key_file: /etc/tracegate/keycloak.pem, kid: main}
//!         - {algorithm: HS256, secret: "${env:TRACEGATE_HMAC_SECRET}"}
//!       roles:
//!         claims: [/realm_access/roles, /resource_access/tracegate/roles]
//!         map: {tracegate-support: support, tracegate-admin: admin, ingest: service}
//!       service_claim: azp        # the claim naming a sending service
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::jwks::JwksConfig;
use super::principal::Role;
use super::pseudonym::PersonalDataConfig;
use crate::shared::Issues;

/// The longest clock-skew allowance the configuration accepts.
pub const MAX_LEEWAY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub issuers: Vec<IssuerConfig>,
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    #[serde(with = "humantime_serde")]
    pub max_token_lifetime: Duration,
    /// Largest accepted `Authorization` / `X-Forwarded-Access-Token` header, in bytes; checked
    /// before anything is parsed.
    pub max_header_bytes: usize,
    /// Listening beyond loopback without authentication is refused at start-up unless this is
    /// set (the way Redis's protected mode works).
    pub allow_unauthenticated_non_loopback: bool,
    /// Personal data shown as pseudonyms in read responses.
    pub personal_data: PersonalDataConfig,
    /// Addresses or CIDR ranges of reverse proxies whose `Forwarded` / `X-Forwarded-For`
    /// headers name the client (for the audit and the failed-authentication limits).
    pub trusted_proxies: Vec<String>,
    /// Browser sign-in with an OpenID Connect provider (docs/signin.md).
    pub login: Option<super::login::LoginConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuers: Vec::new(),
            leeway: Duration::from_secs(30),
            max_token_lifetime: Duration::from_secs(24 * 3600),
            max_header_bytes: 8192,
            allow_unauthenticated_non_loopback: false,
            personal_data: PersonalDataConfig::default(),
            trusted_proxies: Vec::new(),
            login: None,
        }
    }
}

/// One identity provider.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The exact `iss` value.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one.
    pub audience: Vec<String>,
    /// Keys configured here (HMAC secrets, PEM public keys).
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// Keys published by the issuer (its `jwks_uri`).
    #[serde(default)]
    pub jwks: Option<JwksConfig>,
    #[serde(default)]
    pub roles: RolesConfig,
    /// The claim whose value is a sending service's identity, compared with `service.name`.
    #[serde(default = "default_service_claim")]
    pub service_claim: String,
}

fn default_service_claim() -> String {
    "azp".into()
}

/// One verification key. The algorithm is the key's, never the token's.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// `HS256`, `HS384`, `HS512`, `RS256`, `RS384`, `RS512`, `PS256`, `PS384`, `PS512`, `ES256`,
    /// `ES384` or `EdDSA`.
    pub algorithm: String,
    /// When set, only tokens whose header names this `kid` use the key.
    #[serde(default)]
    pub kid: Option<String>,
    /// HMAC secret (use `${env:NAME}`), or `secret_file`.
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Public key (PEM) inline, or `public_key_file`.
    #[serde(default)]
    pub public_key: Option<String>,
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
}

/// Where an issuer puts roles, and what its values mean here.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolesConfig {
    /// JSON Pointers (RFC 6901) into the claims: `/realm_access/roles`,
    /// `/resource_access/tracegate/roles` (Keycloak), `/roles` (Entra), `/groups` (Okta),
    /// `/https:~1~1shop.example~1roles` (Auth0 namespaced). Arrays of strings or a
    /// space-separated string.
    pub claims: Vec<String>,
    /// IdP value -> tracegate role. Values not listed give no role. When empty, the values
    /// `support`, `admin` and `service` map to themselves.
    pub map: BTreeMap<String, Role>,
}

impl AuthConfig {
    /// Whether callers are authenticated at all (bearer issuers, browser sign-in, or both).
    pub fn enabled(&self) -> bool {
        !self.issuers.is_empty() || self.login.is_some()
    }

    pub fn validate(&self, issues: &mut Issues) {
        if self.leeway > MAX_LEEWAY {
            issues.push("auth.leeway", "must be at most 60s");
        }
        if self.max_token_lifetime.is_zero() {
            issues.push("auth.max_token_lifetime", "must be more than 0s");
        }
        if let Err(error) = super::client::TrustedProxies::parse(&self.trusted_proxies) {
            issues.push("auth.trusted_proxies", error.to_string());
        }
        if self.max_header_bytes < 256 {
            issues.push("auth.max_header_bytes", "must be at least 256");
        }
        if self.personal_data.pseudonym_key.as_ref().is_some_and(|k| k.len() < 32) {
            issues.push("auth.personal_data.pseudonym_key", "a pseudonym key needs at least 32 bytes");
        }
        if let Some(login) = &self.login {
            login.validate("auth.login", issues);
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            let path = format!("auth.issuers[{i}]");
            if issuer.issuer.trim().is_empty() {
                issues.push(format!("{path}.issuer"), "must not be empty");
            }
            if issuer.audience.is_empty() {
                issues.push(format!("{path}.audience"), "name at least one accepted audience");
            }
            if issuer.keys.is_empty() && issuer.jwks.is_none() {
                issues.push(format!("{path}.keys"), "an issuer needs keys or a jwks URL");
            }
            if let Some(jwks) = &issuer.jwks {
                jwks.validate(&format!("{path}.jwks"), issues);
            }
            for (k, key) in issuer.keys.iter().enumerate() {
                key.validate(&format!("{path}.keys[{k}]"), issues);
            }
            for (r, pointer) in issuer.roles.claims.iter().enumerate() {
                if !pointer.starts_with('/') {
                    issues.push(format!("{path}.roles.claims[{r}]"), "a JSON Pointer starts with '/' (e.g. /realm_access/roles)");
                }
            }
            if self.issuers[..i].iter().any(|other| other.issuer == issuer.issuer) {
                issues.push(format!("{path}.issuer"), format!("issuer {:?} is listed twice", issuer.issuer));
            }
        }
    }
}

impl KeyConfig {
    fn validate(&self, path: &str, issues: &mut Issues) {
        let hmac = matches!(self.algorithm.as_str(), "HS256" | "HS384" | "HS512");
        let public =
            matches!(self.algorithm.as_str(), "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES256" | "ES384" | "EdDSA");
        if !hmac && !public {
            issues.push(
                format!("{path}.algorithm"),
                format!("unknown algorithm {:?}; use HS256/384/512, RS256/384/512, PS256/384/512, ES256, ES384 or EdDSA", self.algorithm),
            );
            return;
        }
        let secrets = self.secret.is_some() as u8 + self.secret_file.is_some() as u8;
        let publics = self.public_key.is_some() as u8 + self.public_key_file.is_some() as u8;
        if hmac && (secrets != 1 || publics != 0) {
            issues.push(path, format!("an {} key needs exactly one of secret or secret_file", self.algorithm));
        }
        if public && (publics != 1 || secrets != 0) {
            issues.push(path, format!("an {} key needs exactly one of public_key or public_key_file (PEM)", self.algorithm));
        }
        if let Some(secret) = &self.secret {
            if secret.len() < 32 {
                issues.push(format!("{path}.secret"), "an HMAC secret needs at least 32 bytes");
            }
        }
        if let Some(file) = &self.secret_file {
            crate::shared::check_readable_file(issues, format!("{path}.secret_file"), file);
        }
        if let Some(file) = &self.public_key_file {
            crate::shared::check_readable_file(issues, format!("{path}.public_key_file"), file);
        }
    }
}
