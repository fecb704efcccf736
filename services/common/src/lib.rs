//! Plumbing shared by every Berth service and binary.
//!
//! Nothing here knows about images, snapshots or containers: only how services find,
//! call and serve each other (addresses, sockets, namespaces, trace context), how they
//! keep state (sled), and how they read the daemon configuration.

pub mod address;
pub mod client;
pub mod config;
pub mod context;
pub mod crilog;
pub mod error;
pub mod events;
pub mod host;
pub mod image_changes;
pub mod lock;
pub mod mount;
pub mod namespace;
pub mod serve;
pub mod store;
pub mod task;
pub mod telemetry;
pub mod time;

pub use address::Address;
pub use config::Config;
pub use context::ServiceContext;
pub use namespace::Namespace;
