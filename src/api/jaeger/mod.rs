//! The Jaeger-compatible query API on the API port: what Jaeger UI and Grafana's Jaeger data
//! source call (`/api/...`) and Jaeger's api_v3 (`/api/v3/...`), answered from tracegate's own
//! read backend, behind the same door as `/api/v1` (roles, masking, audit). See docs/jaeger.md.

mod api_v2;
mod api_v3;
mod model;
mod params;

pub use api_v2::{dependencies, operations, search, service_operations, services, trace};

/// The api_v3 handlers.
pub mod v3 {
    pub use super::api_v3::{find_traces, operations, services, trace};
}
