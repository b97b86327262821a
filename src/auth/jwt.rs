//! Token validation. The algorithm comes from the configured key, never from the token: a token
//! whose `alg` no key of its issuer has (`none`, `HS256` against an RSA key, ...) is refused
//! before any signature is computed. `jku`, `jwk`, `x5u` and `x5c` headers are never read.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::config::{AuthConfig, IssuerConfig, KeyConfig};
use super::error::AuthError;
use super::jwks::{Freshness, JwksSource};
use super::principal::Principal;
use super::roles::roles_from_claims;
use super::setup::{AuthSetupError, KeyError};

/// A verified token: who it is, and what the audit should hear about its claims.
#[derive(Debug, Clone)]
pub struct Verified {
    pub principal: Principal,
    /// Role claims of the wrong shape (JSON Pointers).
    pub malformed_role_claims: Vec<String>,
}

/// Checks tokens against every configured issuer.
pub struct TokenVerifier {
    issuers: Vec<IssuerKeys>,
    leeway: u64,
    max_lifetime: u64,
}

struct IssuerKeys {
    config: IssuerConfig,
    keys: Vec<VerifyKey>,
    jwks: Option<Arc<JwksSource>>,
}

/// One verification key with the algorithm it verifies (from the configuration or the JWKS).
pub struct VerifyKey {
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    /// The algorithm's name as a token's `alg` spells it.
    pub name: String,
    pub key: DecodingKey,
}

/// The keys that may verify a token with this `alg` and `kid`.
fn candidates<'a>(keys: &'a [VerifyKey], alg: &str, kid: Option<&str>) -> Vec<&'a VerifyKey> {
    keys.iter()
        .filter(|k| k.name == alg)
        .filter(|k| match (&k.kid, kid) {
            (Some(expected), Some(found)) => expected == found,
            (Some(_), None) => false,
            (None, _) => true,
        })
        .collect()
}

impl TokenVerifier {
    /// Loads every key (files are read here, once). The error names the key.
    pub fn new(config: &AuthConfig) -> Result<TokenVerifier, AuthSetupError> {
        let mut issuers = Vec::new();
        for (i, issuer) in config.issuers.iter().enumerate() {
            let mut keys = Vec::new();
            for (k, key) in issuer.keys.iter().enumerate() {
                keys.push(load_key(key).map_err(|source| AuthSetupError::Key { at: format!("auth.issuers[{i}].keys[{k}]"), source })?);
            }
            let jwks = match &issuer.jwks {
                Some(j) => Some(Arc::new(
                    JwksSource::new(j).map_err(|source| AuthSetupError::Jwks { at: format!("auth.issuers[{i}].jwks"), source })?,
                )),
                None => None,
            };
            issuers.push(IssuerKeys { config: issuer.clone(), keys, jwks });
        }
        Ok(TokenVerifier { issuers, leeway: config.leeway.as_secs(), max_lifetime: config.max_token_lifetime.as_secs() })
    }

    /// Verifies `token` now.
    pub async fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.verify_at(token, now).await
    }

    /// The cheap checks that need no key: a compact JWS from a configured issuer. Lets a
    /// receiver turn away anonymous traffic before reading a body.
    pub fn precheck(&self, token: &str) -> Result<(), AuthError> {
        let (_, _, iss) = self.parse(token)?;
        self.issuers.iter().find(|i| i.config.issuer == iss).map(|_| ()).ok_or_else(|| AuthError::Invalid("unknown issuer".into()))
    }

    fn parse(&self, token: &str) -> Result<(String, Option<String>, String), AuthError> {
        let invalid = |reason: &str| AuthError::Invalid(reason.to_string());
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(_signature), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(invalid("not a compact JWS (three dot-separated parts)"));
        };
        let header = decode_json(header).ok_or_else(|| invalid("header is not base64url JSON"))?;
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => alg.clone(),
            _ => return Err(invalid("header has no alg string")),
        };
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(invalid("kid is not a string")),
        };
        // Unverified, only to pick the issuer's keys; every claim is checked after the signature.
        let unverified = decode_json(payload).ok_or_else(|| invalid("payload is not base64url JSON"))?;
        let iss = match unverified.get("iss") {
            Some(Value::String(iss)) => iss.clone(),
            Some(_) => return Err(invalid("iss is not a string")),
            None => return Err(invalid("missing required claim iss")),
        };
        Ok((alg, kid, iss))
    }

    pub async fn verify_at(&self, token: &str, now: u64) -> Result<Verified, AuthError> {
        let invalid = |reason: &str| AuthError::Invalid(reason.to_string());
        let (alg, kid, iss) = self.parse(token)?;
        let (alg, kid) = (alg.as_str(), kid.as_deref());
        let issuer = self.issuers.iter().find(|i| i.config.issuer == iss).ok_or_else(|| invalid("unknown issuer"))?;
        let mut remote = match &issuer.jwks {
            Some(jwks) => {
                let (keys, freshness) = jwks.keys();
                if freshness == Freshness::Stale {
                    // Refresh in the background; the keys at hand still work meanwhile.
                    let jwks = jwks.clone();
                    tokio::spawn(async move { jwks.refresh().await });
                }
                keys
            }
            None => Arc::new(Vec::new()),
        };
        let known = |remote: &[VerifyKey]| !candidates(&issuer.keys, alg, kid).is_empty() || !candidates(remote, alg, kid).is_empty();
        if !known(&remote) {
            if let Some(jwks) = &issuer.jwks {
                // An unknown kid may be a rotation: one fetch per cooldown, shared by all callers.
                jwks.refresh().await;
                remote = jwks.keys().0;
            }
        }
        let mut keys = candidates(&issuer.keys, alg, kid);
        keys.extend(candidates(&remote, alg, kid));
        if keys.is_empty() {
            if issuer.keys.iter().chain(remote.iter()).any(|k| k.name == alg) {
                return Err(invalid("unknown kid"));
            }
            return Err(invalid("algorithm not configured for this issuer"));
        }
        let mut last = invalid("signature does not verify");
        for key in keys {
            match jsonwebtoken::decode::<Value>(token, &key.key, &self.validation(key.algorithm, &issuer.config)) {
                Ok(data) => return self.accept(data.claims, &issuer.config, now),
                Err(e) => last = invalid(&reason(e.kind())),
            }
        }
        Err(last)
    }

    fn validation(&self, algorithm: Algorithm, issuer: &IssuerConfig) -> Validation {
        let mut v = Validation::new(algorithm);
        v.leeway = self.leeway;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_issuer(&[issuer.issuer.as_str()]);
        v.set_audience(&issuer.audience);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v
    }

    /// Claims after the signature: types, lifetime, roles.
    fn accept(&self, claims: Value, issuer: &IssuerConfig, now: u64) -> Result<Verified, AuthError> {
        let invalid = |reason: &str| Err(AuthError::Invalid(reason.to_string()));
        let number = |name: &str| -> Result<Option<f64>, AuthError> {
            match claims.get(name) {
                None => Ok(None),
                Some(Value::Number(n)) => Ok(n.as_f64()),
                Some(_) => Err(AuthError::Invalid(format!("{name} is not a number"))),
            }
        };
        let Some(exp) = number("exp")? else { return invalid("missing required claim exp") };
        let nbf = number("nbf")?;
        let iat = number("iat")?;
        // jsonwebtoken checks these too; a token whose claim has another type must never pass
        // as if the claim were absent.
        if (exp as u64).saturating_add(self.leeway) < now {
            return invalid("expired");
        }
        if let Some(nbf) = nbf {
            if nbf as u64 > now + self.leeway {
                return invalid("not yet valid (nbf)");
            }
        }
        let start = iat.map(|i| i as u64).unwrap_or(now);
        if (exp as u64).saturating_sub(start) > self.max_lifetime {
            return invalid("lifetime longer than auth.max_token_lifetime");
        }
        if let Some(iat) = iat {
            if iat as u64 > now + self.leeway {
                return invalid("issued in the future (iat)");
            }
        }
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) | None => return invalid("missing required claim sub"),
            Some(_) => return invalid("sub is not a string"),
        };
        match claims.get("aud") {
            Some(Value::String(_)) => {}
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
            _ => return invalid("aud is not a string or an array of strings"),
        }
        let roles = roles_from_claims(&claims, &issuer.roles);
        let name = ["preferred_username", "name", "email"].iter().find_map(|k| claims.get(*k).and_then(Value::as_str)).map(str::to_string);
        let service = match claims.get(&issuer.service_claim) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        Ok(Verified {
            principal: Principal {
                issuer: issuer.issuer.clone(),
                subject,
                name,
                roles: roles.roles.into_iter().collect::<BTreeSet<_>>(),
                service,
                anonymous: false,
            },
            malformed_role_claims: roles.malformed,
        })
    }
}

fn decode_json(part: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
    match serde_json::from_slice::<Value>(&bytes).ok()? {
        v @ Value::Object(_) => Some(v),
        _ => None,
    }
}

fn reason(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "expired".into(),
        ErrorKind::ImmatureSignature => "not yet valid (nbf)".into(),
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::InvalidSignature => "signature does not verify".into(),
        ErrorKind::InvalidAlgorithm => "algorithm not configured for this key".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("missing required claim {c}"),
        ErrorKind::InvalidClaimFormat(c) => format!("{c} has the wrong type"),
        _ => "malformed token".into(),
    }
}

fn load_key(config: &KeyConfig) -> Result<VerifyKey, KeyError> {
    let algorithm = Algorithm::from_str(&config.algorithm).map_err(|_| KeyError::UnknownAlgorithm(config.algorithm.clone()))?;
    let read = |path: &std::path::Path| std::fs::read(path).map_err(|source| KeyError::Read { path: path.into(), source });
    let key = match algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            let secret = match (&config.secret, &config.secret_file) {
                (Some(s), _) => s.as_bytes().to_vec(),
                (None, Some(path)) => {
                    let mut bytes = read(path)?;
                    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
                        bytes.pop();
                    }
                    bytes
                }
                (None, None) => return Err(KeyError::NoSecret),
            };
            if secret.len() < 32 {
                return Err(KeyError::ShortSecret);
            }
            DecodingKey::from_secret(&secret)
        }
        _ => {
            let pem = match (&config.public_key, &config.public_key_file) {
                (Some(pem), _) => pem.as_bytes().to_vec(),
                (None, Some(path)) => read(path)?,
                (None, None) => return Err(KeyError::NoPublicKey),
            };
            let parsed = match algorithm {
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
                Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
                _ => DecodingKey::from_rsa_pem(&pem),
            };
            parsed.map_err(|source| KeyError::Pem { algorithm: config.algorithm.clone(), source })?
        }
    };
    Ok(VerifyKey { kid: config.kid.clone(), algorithm, name: config.algorithm.clone(), key })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{KeyConfig, RolesConfig};
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn config(secret_file: &std::path::Path) -> AuthConfig {
        AuthConfig {
            issuers: vec![IssuerConfig {
                issuer: "https://idp.test".into(),
                audience: vec!["tracegate".into()],
                keys: vec![KeyConfig {
                    algorithm: "HS256".into(),
                    kid: None,
                    secret: None,
                    secret_file: Some(secret_file.to_path_buf()),
                    public_key: None,
                    public_key_file: None,
                }],
                jwks: None,
                roles: RolesConfig { claims: vec!["/roles".into()], map: Default::default() },
                service_claim: "azp".into(),
            }],
            ..Default::default()
        }
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[tokio::test]
    async fn an_hmac_secret_from_a_file_and_the_claims_that_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        let secret = "file-secret-0123456789-0123456789-abcdef";
        std::fs::write(&file, format!("{secret}\n")).unwrap();
        let verifier = TokenVerifier::new(&config(&file)).unwrap();
        let sign = |claims: Value| encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap();
        let good =
            json!({"iss": "https://idp.test", "aud": ["other", "tracegate"], "sub": "ada", "exp": now() + 60, "roles": "admin support"});
        let verified = verifier.verify(&sign(good.clone())).await.unwrap();
        assert_eq!(verified.principal.subject, "ada");
        assert_eq!(verified.principal.roles, BTreeSet::from([crate::auth::Role::Admin, crate::auth::Role::Support]));

        let mut iat_string = good.clone();
        iat_string["iat"] = json!("yesterday");
        let mut aud_number = good.clone();
        aud_number["aud"] = json!(7);
        let mut too_long = good.clone();
        too_long["exp"] = json!(now() + 2 * 24 * 3600);
        for (name, claims) in [("iat as a string", iat_string), ("aud as a number", aud_number), ("lifetime over 24h", too_long)] {
            assert!(matches!(verifier.verify(&sign(claims)).await, Err(AuthError::Invalid(_))), "{name}");
        }
    }

    #[test]
    fn leeway_over_a_minute_is_a_configuration_error() {
        let yaml = "receivers: {otlp: {http: {}}}\nexporters: {debug: {}}\nauth: {leeway: 61s}\n\
                    service: {pipelines: {traces: {receivers: [otlp], exporters: [debug]}}}\n";
        let error = crate::Config::from_yaml(yaml).unwrap_err();
        assert_eq!(error.issues.len(), 1, "{error}");
        assert_eq!(error.issues[0].path, "auth.leeway");
    }
}
