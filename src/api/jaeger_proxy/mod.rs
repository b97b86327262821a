//! tracegate in front of a real Jaeger (`api.jaeger_ui`): Jaeger UI and its `/api` served under
//! a path of the API port, after tracegate's own authentication and role check, with personal
//! data masked in trace answers and every read audited. Jaeger's query port is then reached
//! through tracegate only.

mod config;
mod handler;
mod mask;
mod upstream;

pub use config::JaegerUiConfig;
pub use handler::JaegerProxy;
pub use upstream::ProxySetupError;
