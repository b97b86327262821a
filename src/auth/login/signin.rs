//! The browser sign-in: the authorization-code flow with PKCE (S256) and single-use `state`
//! and `nonce`, the sessions it opens, their recheck with the provider, and logout (here and,
//! when the provider offers it, at its `end_session_endpoint`). Every sign-in, refusal, logout
//! and ended session is audited.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use serde_json::Value;
use tokio::time::Instant;

use super::config::{LoginConfig, RoleSource};
use super::cookie::{cookie_names, cookie_value, safe_next, same_origin};
use super::provider::{now_secs, pkce_challenge, random_token, Provider, ProviderError, Tokens};
use super::session::{session_key, Entry, Session, SessionPersistence, SessionTable};
use crate::audit::{Actor, AuditEvent, AuditLog};
use crate::auth::client::ClientAddress;
use crate::auth::config::{AuthConfig, RolesConfig};
use crate::auth::principal::{Principal, Role};
use crate::auth::roles::roles_from_claims;
use crate::auth::setup::AuthSetupError;

/// How long a sign-in may stay at the provider before its `state` is forgotten.
const PENDING_TTL: Duration = Duration::from_secs(600);

/// A sign-in sent to the provider and not yet back.
struct Pending {
    nonce: String,
    verifier: String,
    next: String,
    started: Instant,
}

/// Where `GET /login` sends the browser, and the cookie that binds the sign-in to it.
#[derive(Debug)]
pub struct LoginStart {
    pub location: String,
    /// The value of the binding cookie (the `state`).
    pub binding: String,
}

/// A completed sign-in: the new session's id (for the cookie) and where to go.
#[derive(Debug)]
pub struct SignedIn {
    pub session_id: String,
    pub max_age: u64,
    pub next: String,
}

/// A sign-in that did not happen. The message is for the person; the reason for the audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRefused {
    pub status: u16,
    pub message: &'static str,
    pub reason: String,
}

/// Why a request's session cookie did not give a principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("unknown or ended session")]
    Unknown,
    #[error("session ended: {0}")]
    Ended(String),
    /// The provider could not be asked whether the account is still current; the session is
    /// kept, the request is refused (503).
    #[error("the identity provider cannot confirm the session: {0}")]
    Unconfirmed(String),
}

/// The query of `GET /auth/callback`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// RFC 9207: the provider names itself, so an answer from another provider is refused.
    pub iss: Option<String>,
}

/// A request's session, once confirmed.
pub struct SessionCaller {
    pub principal: Principal,
    pub csrf: String,
    pub expires_at: u64,
}

/// Browser sign-in for one provider.
pub struct SignIn {
    config: LoginConfig,
    roles: RolesConfig,
    provider: Provider,
    pending: Mutex<HashMap<String, Pending>>,
    sessions: SessionTable,
    audit: Option<Arc<AuditLog>>,
}

fn refused(status: u16, message: &'static str, reason: impl Into<String>) -> LoginRefused {
    LoginRefused { status, message, reason: reason.into() }
}

/// Whether `roles` may use tracegate in a browser: the support or admin role.
fn may_read(roles: &BTreeSet<Role>) -> bool {
    roles.contains(&Role::Support) || roles.contains(&Role::Admin)
}

impl SignIn {
    /// `persistence` keeps sessions across restarts (the embedded store); without it they live
    /// in memory only.
    pub fn new(
        auth: &AuthConfig,
        audit: Option<Arc<AuditLog>>,
        persistence: Option<Arc<dyn SessionPersistence>>,
    ) -> Result<Option<SignIn>, AuthSetupError> {
        let Some(config) = &auth.login else { return Ok(None) };
        let provider = Provider::new(config, auth.leeway).map_err(AuthSetupError::Login)?;
        Ok(Some(SignIn {
            config: config.clone(),
            roles: config.roles.as_roles_config(),
            provider,
            pending: Mutex::new(HashMap::new()),
            sessions: SessionTable::new(config.max_sessions, persistence, now_secs()),
            audit,
        }))
    }

    pub fn config(&self) -> &LoginConfig {
        &self.config
    }

    /// (session cookie, sign-in binding cookie) names for this deployment.
    pub fn cookie_names(&self) -> (&'static str, &'static str) {
        cookie_names(self.config.secure())
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The session id the request's cookie carries, if any.
    pub fn session_cookie<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        cookie_value(headers, self.cookie_names().0).filter(|v| !v.is_empty())
    }

    fn record(&self, event: AuditEvent) {
        if let Some(audit) = &self.audit {
            audit.submit(&event);
        }
    }

    fn actor(&self, subject: Option<&str>, name: Option<String>, roles: &BTreeSet<Role>) -> Actor {
        match subject {
            Some(sub) => {
                Actor { iss: self.config.issuer.clone(), sub: sub.to_string(), name, roles: roles.iter().map(|r| r.to_string()).collect() }
            }
            None => Actor::unauthenticated(),
        }
    }

    /// `GET /login`: a new `state`, `nonce` and PKCE verifier, and the provider's authorization
    /// URL. `next` is kept only when it is a path on this site.
    pub async fn begin(&self, next: Option<&str>, client: &ClientAddress) -> Result<LoginStart, LoginRefused> {
        let endpoints = self.provider.endpoints().await.map_err(|e| {
            tracing::warn!(error = %e, "sign-in cannot start");
            refused(503, "The identity provider cannot be reached. Try again in a minute.", e.to_string())
        })?;
        let next = next.and_then(safe_next).unwrap_or("/");
        let next = if next == "/" { format!("{}/", self.config.base_path()) } else { next.to_string() };
        let (state, nonce, verifier) = (random_token(), random_token(), random_token());
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.retain(|_, p| p.started.elapsed() < PENDING_TTL);
            if pending.len() >= self.config.max_pending_logins {
                drop(pending);
                let error =
                    refused(503, "Too many sign-ins are under way. Try again in a minute.", "auth.login.max_pending_logins reached");
                self.record(
                    AuditEvent::new(Actor::unauthenticated(), "login", "/login", "refused")
                        .from_client(client)
                        .because(error.reason.clone()),
                );
                return Err(error);
            }
            pending.insert(state.clone(), Pending { nonce: nonce.clone(), verifier: verifier.clone(), next, started: Instant::now() });
        }
        let mut url = url::Url::parse(&endpoints.authorization)
            .map_err(|e| refused(503, "The identity provider is misconfigured.", e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &self.config.redirect_uri())
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &pkce_challenge(&verifier))
            .append_pair("code_challenge_method", "S256");
        Ok(LoginStart { location: url.to_string(), binding: state })
    }

    /// `GET /auth/callback`: the `state` must be one this browser started and is used up here;
    /// the code is exchanged with the PKCE verifier; the ID token's signature, issuer, audience
    /// and `nonce` are checked; the person needs the support or admin role.
    pub async fn callback(&self, params: &CallbackParams, headers: &HeaderMap, client: &ClientAddress) -> Result<SignedIn, LoginRefused> {
        let result = self.complete(params, headers).await;
        match &result {
            Ok((signed_in, session)) => {
                self.record(
                    AuditEvent::new(
                        self.actor(Some(&session.subject), session.name.clone(), &session.roles),
                        "login",
                        "/auth/callback",
                        "allowed",
                    )
                    .from_client(client),
                );
                let pushed_out = self.sessions.insert(session_key(&signed_in.session_id), session.clone(), now_secs()).await;
                for old in pushed_out {
                    self.record(
                        AuditEvent::new(
                            self.actor(Some(&old.subject), old.name.clone(), &old.roles),
                            "session.end",
                            "/auth/callback",
                            "ended",
                        )
                        .because("the most sessions are open (auth.login.max_sessions); the one closest to its end was ended"),
                    );
                }
            }
            Err((error, who)) => {
                tracing::info!(reason = %error.reason, "sign-in refused");
                let actor = match who {
                    Some((sub, name, roles)) => self.actor(Some(sub), name.clone(), roles),
                    None => Actor::unauthenticated(),
                };
                self.record(AuditEvent::new(actor, "login", "/auth/callback", "refused").from_client(client).because(error.reason.clone()));
            }
        }
        result.map(|(signed_in, _)| signed_in).map_err(|(e, _)| e)
    }

    #[allow(clippy::type_complexity)]
    async fn complete(
        &self,
        params: &CallbackParams,
        headers: &HeaderMap,
    ) -> Result<(SignedIn, Session), (LoginRefused, Option<(String, Option<String>, BTreeSet<Role>)>)> {
        let bad = |reason: &str| (refused(400, "This sign-in link is not valid any more. Please sign in again.", reason), None);
        let Some(state) = params.state.as_deref().filter(|s| !s.is_empty()) else { return Err(bad("callback without state")) };
        // Single use: taken out before anything else is checked.
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(state);
        let Some(pending) = pending.filter(|p| p.started.elapsed() < PENDING_TTL) else {
            return Err(bad("unknown, expired or already used state"));
        };
        if cookie_value(headers, self.cookie_names().1) != Some(state) {
            return Err(bad("state was not started by this browser (binding cookie missing or different)"));
        }
        if params.iss.as_deref().is_some_and(|iss| iss != self.config.issuer) {
            return Err(bad("the callback names another issuer (iss)"));
        }
        if let Some(error) = &params.error {
            let reason = format!("the provider answered {error}: {}", params.error_description.as_deref().unwrap_or(""));
            return Err((refused(403, "The identity provider did not sign you in.", reason.trim()), None));
        }
        let Some(code) = params.code.as_deref().filter(|c| !c.is_empty()) else { return Err(bad("callback without code")) };
        let provider_refused = |e: ProviderError| {
            let status = if matches!(e, ProviderError::Unreachable(_)) { 503 } else { 400 };
            (refused(status, "Signing in did not work. Please sign in again.", e.to_string()), None)
        };
        let tokens = self.provider.exchange_code(code, &pending.verifier).await.map_err(provider_refused)?;
        let Some(id_token) = tokens.id_token.clone() else {
            return Err(provider_refused(ProviderError::Invalid("no id_token in the token response (is openid in scopes?)".into())));
        };
        let id_claims = self.provider.verify_id_token(&id_token, &pending.nonce).await.map_err(provider_refused)?;
        let subject = id_claims.get("sub").and_then(Value::as_str).unwrap_or_default().to_string();
        let (roles, name) = self.roles_of(&id_claims, &tokens, &subject).await.map_err(provider_refused)?;
        if !may_read(&roles) {
            let who = Some((subject, name, roles));
            return Err((refused(403, "Your account does not have a tracegate role (support or admin).", "no support or admin role"), who));
        }
        let now = now_secs();
        let session = Session {
            issuer: self.config.issuer.clone(),
            subject,
            name,
            roles,
            id_token: Some(id_token),
            access_token: tokens.access_token.clone(),
            refresh_token: tokens.refresh_token.clone(),
            access_expires_at: tokens.expires_in.map(|s| now + s),
            created_at: now,
            expires_at: self.session_end(
                now,
                now + self.config.session_lifetime.as_secs(),
                &tokens,
                id_claims.get("exp").and_then(Value::as_u64),
            ),
            checked_at: now,
            csrf: random_token(),
        };
        let signed_in = SignedIn { session_id: random_token(), max_age: session.expires_at.saturating_sub(now), next: pending.next };
        Ok((signed_in, session))
    }

    /// A session never outlives the provider's tokens: without a refresh token it ends with the
    /// access token (or the ID token); with one whose lifetime the provider says, with that.
    fn session_end(&self, now: u64, current_end: u64, tokens: &Tokens, id_exp: Option<u64>) -> u64 {
        let mut end = current_end;
        match &tokens.refresh_token {
            Some(_) => {
                if let Some(s) = tokens.refresh_expires_in {
                    end = end.min(now + s);
                }
            }
            None => {
                if let Some(bound) = tokens.expires_in.map(|s| now + s).or(id_exp) {
                    end = end.min(bound);
                }
            }
        }
        end
    }

    /// The roles from the configured source, and a display name.
    async fn roles_of(&self, id_claims: &Value, tokens: &Tokens, subject: &str) -> Result<(BTreeSet<Role>, Option<String>), ProviderError> {
        let claims = match self.config.roles.from {
            RoleSource::IdToken => id_claims.clone(),
            RoleSource::AccessToken => {
                let claims = self.provider.verify_jwt(&tokens.access_token, None).await?;
                if claims.get("sub").and_then(Value::as_str) != Some(subject) {
                    return Err(ProviderError::Invalid("the access token names another subject".into()));
                }
                claims
            }
            RoleSource::Userinfo => self.userinfo(&tokens.access_token, subject).await?,
        };
        let found = roles_from_claims(&claims, &self.roles);
        if !found.malformed.is_empty() {
            tracing::warn!(claims = ?found.malformed, "role claims of the wrong shape give no role");
        }
        let name = ["preferred_username", "name", "email"]
            .iter()
            .find_map(|k| claims.get(*k).or_else(|| id_claims.get(*k)).and_then(Value::as_str))
            .map(str::to_string);
        Ok((found.roles, name))
    }

    async fn userinfo(&self, access_token: &str, subject: &str) -> Result<Value, ProviderError> {
        let claims = self.provider.userinfo(access_token).await?;
        if claims.get("sub").and_then(Value::as_str) != Some(subject) {
            return Err(ProviderError::Invalid("userinfo names another subject".into()));
        }
        Ok(claims)
    }

    /// The principal of a request's session cookie. Every `recheck` the provider confirms the
    /// account (refresh token, else userinfo) and the roles follow its answer; a refusal, or no
    /// support or admin role any more, ends the session.
    pub async fn authenticate(&self, session_id: &str, client: &ClientAddress) -> Result<SessionCaller, SessionError> {
        let key = session_key(session_id);
        let entry = self.sessions.get(&key).ok_or(SessionError::Unknown)?;
        let snapshot = entry.session.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let now = now_secs();
        if snapshot.expires_at <= now {
            self.end(&key, &snapshot, client, "expired").await;
            return Err(SessionError::Ended("expired".into()));
        }
        let session = if now.saturating_sub(snapshot.checked_at) >= self.config.recheck.as_secs() {
            self.recheck(&key, &entry, client).await?
        } else {
            snapshot
        };
        Ok(SessionCaller { principal: session.principal(), csrf: session.csrf.clone(), expires_at: session.expires_at })
    }

    async fn recheck(&self, key: &str, entry: &Arc<Entry>, client: &ClientAddress) -> Result<Session, SessionError> {
        // One call to the provider per session at a time; who waited sees its result.
        let _turn = entry.recheck.lock().await;
        let mut session = entry.session.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let now = now_secs();
        if now.saturating_sub(session.checked_at) < self.config.recheck.as_secs() {
            return Ok(session);
        }
        if self.sessions.get(key).is_none() {
            return Err(SessionError::Unknown);
        }
        match self.confirm(&mut session, now).await {
            Ok(()) if may_read(&session.roles) => {
                session.checked_at = now;
                *entry.session.lock().unwrap_or_else(|p| p.into_inner()) = session.clone();
                self.sessions.persist(key, &session).await;
                Ok(session)
            }
            Ok(()) => {
                self.end(key, &session, client, "the identity provider no longer gives the support or admin role").await;
                Err(SessionError::Ended("role removed".into()))
            }
            Err(ProviderError::Unreachable(reason)) => {
                tracing::warn!(%reason, "a session cannot be rechecked; its requests are refused until the provider answers");
                Err(SessionError::Unconfirmed(reason))
            }
            Err(error) => {
                self.end(key, &session, client, &error.to_string()).await;
                Err(SessionError::Ended(error.to_string()))
            }
        }
    }

    /// Asks the provider about `session` and takes in its answer (tokens, roles, end).
    async fn confirm(&self, session: &mut Session, now: u64) -> Result<(), ProviderError> {
        if let Some(refresh_token) = session.refresh_token.clone() {
            let tokens = self.provider.refresh(&refresh_token).await?;
            let id_claims = match &tokens.id_token {
                Some(id_token) => {
                    let claims = self.provider.verify_jwt(id_token, Some(&self.config.client_id)).await?;
                    if claims.get("sub").and_then(Value::as_str) != Some(session.subject.as_str()) {
                        return Err(ProviderError::Invalid("the refreshed ID token names another subject".into()));
                    }
                    session.id_token = Some(id_token.clone());
                    Some(claims)
                }
                None => None,
            };
            session.access_token = tokens.access_token.clone();
            session.access_expires_at = tokens.expires_in.map(|s| now + s);
            if tokens.refresh_token.is_some() {
                session.refresh_token = tokens.refresh_token.clone();
            }
            if let Some(s) = tokens.refresh_expires_in {
                session.expires_at = session.expires_at.min(now + s);
            }
            let roles = match (self.config.roles.from, id_claims) {
                (RoleSource::IdToken, Some(claims)) => Some(self.roles_of(&claims, &tokens, &session.subject).await?.0),
                (RoleSource::IdToken, None) if !self.has_userinfo().await => None,
                (RoleSource::IdToken, None) => Some(self.userinfo_roles(&tokens.access_token, &session.subject).await?),
                (_, claims) => {
                    let claims = claims.unwrap_or_else(|| serde_json::json!({}));
                    Some(self.roles_of(&claims, &tokens, &session.subject).await?.0)
                }
            };
            if let Some(roles) = roles {
                session.roles = roles;
            }
            return Ok(());
        }
        if !self.has_userinfo().await {
            // Nothing to ask: the session ends with its access token (set at sign-in).
            return Ok(());
        }
        session.roles = self.userinfo_roles(&session.access_token, &session.subject).await?;
        Ok(())
    }

    async fn has_userinfo(&self) -> bool {
        self.provider.endpoints().await.is_ok_and(|e| e.userinfo.is_some())
    }

    async fn userinfo_roles(&self, access_token: &str, subject: &str) -> Result<BTreeSet<Role>, ProviderError> {
        let claims = self.userinfo(access_token, subject).await?;
        Ok(roles_from_claims(&claims, &self.roles).roles)
    }

    async fn end(&self, key: &str, session: &Session, client: &ClientAddress, reason: &str) {
        if self.sessions.remove(key).await.is_some() {
            self.record(
                AuditEvent::new(
                    self.actor(Some(&session.subject), session.name.clone(), &session.roles),
                    "session.end",
                    "session",
                    "ended",
                )
                .from_client(client)
                .because(reason.to_string()),
            );
        }
    }

    /// A state-changing request made with a session: from our own pages (`Origin` or
    /// `Sec-Fetch-Site`), or carrying the session's CSRF token (`X-CSRF-Token` or the `csrf`
    /// form field, passed as `form_token`).
    pub fn csrf_ok(&self, headers: &HeaderMap, csrf: &str, form_token: Option<&str>) -> bool {
        if same_origin(headers, &self.config.origin()) {
            return true;
        }
        let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).or(form_token);
        sent.is_some_and(|t| constant_time_eq(t.as_bytes(), csrf.as_bytes()))
    }

    /// The CSRF token of a session, without asking the provider (for `POST /logout`).
    pub fn csrf_of(&self, session_id: &str) -> Option<String> {
        let entry = self.sessions.get(&session_key(session_id))?;
        let csrf = entry.session.lock().unwrap_or_else(|p| p.into_inner()).csrf.clone();
        Some(csrf)
    }

    /// `POST /logout`: ends the session here and returns where to send the browser: the
    /// provider's `end_session_endpoint` (RP-initiated logout) when it has one, else our start.
    pub async fn logout(&self, session_id: Option<&str>, client: &ClientAddress) -> String {
        let home = format!("{}/", self.config.base_url());
        let Some(id) = session_id else { return home };
        let Some(session) = self.sessions.remove(&session_key(id)).await else { return home };
        self.record(
            AuditEvent::new(self.actor(Some(&session.subject), session.name.clone(), &session.roles), "logout", "/logout", "allowed")
                .from_client(client),
        );
        let Ok(endpoints) = self.provider.endpoints().await else { return home };
        let Some(end_session) = &endpoints.end_session else { return home };
        let Ok(mut url) = url::Url::parse(end_session) else { return home };
        {
            let mut query = url.query_pairs_mut();
            if let Some(hint) = &session.id_token {
                query.append_pair("id_token_hint", hint);
            }
            query.append_pair("client_id", &self.config.client_id).append_pair("post_logout_redirect_uri", &home);
        }
        url.to_string()
    }

    /// The CSRF token and details of a request's session (for `GET /auth/session`).
    pub async fn describe(&self, session_id: &str, client: &ClientAddress) -> Result<Value, SessionError> {
        let caller = self.authenticate(session_id, client).await?;
        Ok(serde_json::json!({
            "subject": caller.principal.subject,
            "name": caller.principal.name,
            "roles": caller.principal.roles,
            "csrf_token": caller.csrf,
            "expires_at": crate::shared::format_rfc3339_nanos(caller.expires_at.saturating_mul(1_000_000_000)),
        }))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
