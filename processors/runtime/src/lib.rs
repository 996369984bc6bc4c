//! Shared plumbing of every Switchboard binary, so that no binary re-invents it:
//!
//! - [`config`]: one typed config struct per binary, from `SWITCHBOARD_*` env and an
//!   optional TOML file;
//! - [`telemetry`]: JSON logs and the Prometheus registry;
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`;
//! - [`kafka`]: topic names, the idempotent acks=all producer, topic creation;
//! - [`stream`]: the at-least-once batch loop (offsets follow work);
//! - [`lanes`]: the at-least-once loop for out-of-order work (one task per record);
//! - [`failure`]: transient or permanent, decided once for every loop;
//! - [`deadletter`]: records a stage gives up on, with reason and source position;
//! - [`shutdown`]: SIGTERM/SIGINT into a cancellation token;
//! - [`retry`]: waiting for a dependency (at start-up, or in a stage);
//! - `pg`: PostgreSQL connection options (named after their binary) and the ping;
//! - [`config_cache`]: the live copy of the `wa.config` topic every process keeps;
//! - [`secrets`]: AES-256-GCM encryption at rest with a rotatable keyring;
//! - [`netguard`]: which addresses client endpoints may point at.
//!
//! It knows nothing about BSPs or the canonical event model.

pub mod config;
pub mod config_cache;
pub mod deadletter;
pub mod failure;
pub mod gaps;
pub mod kafka;
pub mod lanes;
pub mod netguard;
pub mod ops;
#[cfg(feature = "postgres")]
pub mod pg;
pub mod producer;
pub mod retry;
pub mod secrets;
pub mod shutdown;
pub mod stream;
pub mod telemetry;

pub use tokio_util::sync::CancellationToken;

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
