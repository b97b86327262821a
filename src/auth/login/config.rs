//! `auth.login`: browser sign-in with the company's OpenID Connect provider.
//!
//! ```yaml
//! auth:
//!   login:
//!     issuer: https://sso.example.com/realms/shop     # discovery: {issuer}/.well-known/openid-configuration
//!     client_id: tracegate
//!     client_secret: "${env:TRACEGATE_OIDC_CLIENT_SECRET}"   # omit for a public client (PKCE only)
//!     public_url: https://tracegate.example.com       # the redirect URI is {public_url}/auth/callback
//!     scopes: [openid, profile, email]
//!     roles:
//!       from: id_token                                # or access_token, userinfo
//!       claims: [/realm_access/roles]
//!       map: {tracegate-support: support, tracegate-admin: admin}
//!     session_lifetime: 8h
//!     recheck: 5m
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::config::RolesConfig;
use crate::auth::principal::Role;
use crate::auth::setup::LoginUrlError;
use crate::shared::Issues;

/// The shortest `recheck` accepted (each recheck is a call to the IdP).
pub const MIN_RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// The provider's issuer identifier, exactly as its discovery document and tokens spell it.
    pub issuer: String,
    pub client_id: String,
    /// A confidential client's secret (use `${env:NAME}`); none for a public client.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Where browsers reach tracegate (scheme, host, port, and a path prefix if any). The
    /// redirect URI registered at the provider is `{public_url}/auth/callback`.
    pub public_url: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub roles: LoginRoles,
    /// The longest a session lasts, whatever the provider says.
    #[serde(default = "default_lifetime", with = "humantime_serde")]
    pub session_lifetime: Duration,
    /// How often a session is confirmed with the provider (refresh token or userinfo).
    #[serde(default = "default_recheck", with = "humantime_serde")]
    pub recheck: Duration,
    /// The most sessions held at once; the one closest to its end is ended to make room.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// The most sign-ins under way (sent to the provider, not yet back) at once.
    #[serde(default = "default_max_pending")]
    pub max_pending_logins: usize,
    /// Each call to the provider (discovery, token, userinfo, keys).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Allows an `http://` issuer and endpoints on a loopback host (tests, a local IdP).
    #[serde(default)]
    pub allow_insecure_loopback: bool,
    /// A CA bundle (PEM) for a provider behind a private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// Where the roles of a signed-in person are read, and what the values mean: the same
/// `claims` and `map` as a bearer issuer's `roles`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginRoles {
    pub from: RoleSource,
    pub claims: Vec<String>,
    pub map: BTreeMap<String, Role>,
}

impl Default for LoginRoles {
    fn default() -> Self {
        LoginRoles { from: RoleSource::IdToken, claims: vec!["/roles".into()], map: BTreeMap::new() }
    }
}

impl LoginRoles {
    pub fn as_roles_config(&self) -> RolesConfig {
        RolesConfig { claims: self.claims.clone(), map: self.map.clone() }
    }
}

/// Which of the provider's answers carries the role claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleSource {
    IdToken,
    /// A JWT access token (Keycloak, Entra); its signature is checked with the provider's keys.
    AccessToken,
    Userinfo,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}
fn default_lifetime() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_recheck() -> Duration {
    Duration::from_secs(300)
}
fn default_max_sessions() -> usize {
    10_000
}
fn default_max_pending() -> usize {
    10_000
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Whether `url` may be used: https, or http to a loopback host when allowed. The error says why.
pub fn check_url(url: &str, allow_insecure_loopback: bool) -> Result<http::Uri, LoginUrlError> {
    let uri: http::Uri = url.parse().map_err(LoginUrlError::NotAUrl)?;
    if uri.host().is_none() {
        return Err(LoginUrlError::NotAbsolute);
    }
    let loopback = matches!(uri.host(), Some("127.0.0.1" | "localhost" | "[::1]" | "::1"));
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if loopback && allow_insecure_loopback => Ok(uri),
        Some("http") if loopback => Err(LoginUrlError::InsecureLoopback),
        _ => Err(LoginUrlError::NotHttps),
    }
}

impl LoginConfig {
    pub fn validate(&self, path: &str, issues: &mut Issues) {
        if let Err(error) = check_url(&self.issuer, self.allow_insecure_loopback) {
            issues.push(format!("{path}.issuer"), crate::shared::error_chain(&error));
        }
        match check_url(&self.public_url, true) {
            Err(error) => issues.push(format!("{path}.public_url"), crate::shared::error_chain(&error)),
            Ok(uri) => {
                if uri.query().is_some() {
                    issues.push(format!("{path}.public_url"), "must not have a query");
                }
            }
        }
        if self.client_id.trim().is_empty() {
            issues.push(format!("{path}.client_id"), "must not be empty");
        }
        if self.client_secret.as_deref().is_some_and(|s| s.is_empty()) {
            issues.push(format!("{path}.client_secret"), "is empty (is the environment variable set?); omit it for a public client");
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            issues.push(format!("{path}.scopes"), "must include openid");
        }
        if let Some(bad) = self.scopes.iter().find(|s| s.is_empty() || s.contains(char::is_whitespace)) {
            issues.push(format!("{path}.scopes"), format!("{bad:?} is not a scope (one word each)"));
        }
        for (r, pointer) in self.roles.claims.iter().enumerate() {
            if !pointer.starts_with('/') {
                issues.push(format!("{path}.roles.claims[{r}]"), "a JSON Pointer starts with '/' (e.g. /realm_access/roles)");
            }
        }
        if self.roles.claims.is_empty() {
            issues.push(format!("{path}.roles.claims"), "name at least one claim that holds roles");
        }
        if self.session_lifetime < Duration::from_secs(60) {
            issues.push(format!("{path}.session_lifetime"), "must be at least 1m");
        }
        if self.recheck < MIN_RECHECK || self.recheck > self.session_lifetime {
            issues.push(format!("{path}.recheck"), "must be at least 1s and at most session_lifetime");
        }
        if self.max_sessions == 0 {
            issues.push(format!("{path}.max_sessions"), "must be at least 1");
        }
        if self.max_pending_logins == 0 {
            issues.push(format!("{path}.max_pending_logins"), "must be at least 1");
        }
        if self.timeout.is_zero() {
            issues.push(format!("{path}.timeout"), "must be more than 0s");
        }
        if let Some(ca) = &self.ca_file {
            crate::shared::check_readable_file(issues, format!("{path}.ca_file"), ca);
        }
    }

    /// `public_url` without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.public_url.trim_end_matches('/')
    }

    pub fn redirect_uri(&self) -> String {
        format!("{}/auth/callback", self.base_url())
    }

    /// Served over HTTPS: the cookie is `__Host-` prefixed and `Secure`.
    pub fn secure(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    /// `scheme://host[:port]` of `public_url`, as browsers send it in `Origin`.
    pub fn origin(&self) -> String {
        match self.public_url.parse::<http::Uri>() {
            Ok(uri) => match (uri.scheme_str(), uri.authority()) {
                (Some(scheme), Some(authority)) => format!("{scheme}://{}", authority.as_str().to_ascii_lowercase()),
                _ => String::new(),
            },
            Err(_) => String::new(),
        }
    }

    /// The path prefix of `public_url` ("" at the root).
    pub fn base_path(&self) -> String {
        self.public_url.parse::<http::Uri>().map(|u| u.path().trim_end_matches('/').to_string()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> LoginConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_urls_and_checks() {
        let c = config("{issuer: 'https://sso.test/realms/shop', client_id: tracegate, public_url: 'https://tg.test:8443/'}");
        assert_eq!(c.redirect_uri(), "https://tg.test:8443/auth/callback");
        assert_eq!(c.origin(), "https://tg.test:8443");
        assert!(c.secure());
        assert_eq!(c.recheck, Duration::from_secs(300));
        assert_eq!(c.roles.from, RoleSource::IdToken);
        let mut issues = Issues::default();
        c.validate("auth.login", &mut issues);
        assert!(issues.found().is_empty(), "{:?}", issues.found());

        let c = config(
            "{issuer: 'http://sso.test', client_id: '', public_url: 'http://tg.test', scopes: [profile], recheck: 0s, client_secret: ''}",
        );
        let mut issues = Issues::default();
        c.validate("auth.login", &mut issues);
        let paths: Vec<_> = issues.found().iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "auth.login.issuer",
                "auth.login.public_url",
                "auth.login.client_id",
                "auth.login.client_secret",
                "auth.login.scopes",
                "auth.login.recheck"
            ]
        );
    }

    #[test]
    fn plain_http_only_to_loopback_and_only_when_allowed() {
        assert!(check_url("http://127.0.0.1:9000", false).is_err());
        assert!(check_url("http://127.0.0.1:9000", true).is_ok());
        assert!(check_url("http://idp.test", true).is_err());
        assert!(check_url("https://idp.test", false).is_ok());
        assert!(check_url("/relative", true).is_err());
    }
}
