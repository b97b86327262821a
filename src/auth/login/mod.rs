//! Browser sign-in with the company's OpenID Connect provider (`auth.login`): the
//! authorization-code flow with PKCE, sessions held server-side behind an opaque cookie and
//! rechecked with the provider, logout, and the cookie and same-origin rules around them.

mod config;
mod cookie;
mod provider;
mod session;
mod signin;

pub use config::{LoginConfig, LoginRoles, RoleSource};
pub use cookie::set_cookie;
pub use session::{Session, SessionPersistence};
pub use signin::{CallbackParams, LoginRefused, LoginStart, SessionCaller, SessionError, SignIn, SignedIn};
