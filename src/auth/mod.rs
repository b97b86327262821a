//! Authentication and authorization: JWTs from several issuers (HMAC secrets and PEM public
//! keys; the algorithm is always the configured key's), roles mapped from each issuer's claims,
//! a route -> permission table that denies by default, and service identity on ingest.

mod client;
mod config;
mod error;
mod jwks;
mod jwt;
mod login;
mod policy;
mod principal;
mod pseudonym;
mod roles;
mod setup;

pub use client::{ClientAddress, TrustedProxies};
pub use config::{AuthConfig, IssuerConfig, KeyConfig, RolesConfig, MAX_LEEWAY};
pub use error::AuthError;
pub use jwks::{parse_jwks, Freshness, JwksConfig, JwksError, JwksSource, MAX_REFRESH_INTERVAL};
pub use jwt::{TokenVerifier, Verified, VerifyKey};
pub use login::{
    set_cookie, CallbackParams, LoginConfig, LoginRefused, LoginRoles, LoginStart, RoleSource, Session, SessionCaller, SessionError,
    SessionPersistence, SignIn, SignedIn,
};
pub use policy::{bearer_token, check_ingest, rule_for, service_name, AccessControl, Permission, RouteRule, API_ROUTES};
pub use principal::{Principal, Role};
pub use pseudonym::{PersonalDataConfig, Pseudonymizer};
pub use roles::{roles_from_claims, RoleLookup};
pub use setup::{AuthSetupError, ClientSetupError, KeyError, LoginUrlError, TrustedProxyError};
