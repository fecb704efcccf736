//! Berth's gRPC contracts. One module per versioned package; see `proto/berth/**`.
//!
//! Rules (DESIGN.md): fields are only added, never renumbered; the namespace travels in
//! the `berth-namespace` metadata key; every change to the API shows up in
//! `proto/api-snapshot.txt` (checked by a test).

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

/// The encoded `FileDescriptorSet` of every Berth proto (and its imports).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth_descriptor.bin"));

/// The API version served by this build, reported by `berth version`.
pub const API_VERSION: &str = "1.0";

/// gRPC metadata key carrying the namespace of a request.
pub const NAMESPACE_METADATA_KEY: &str = "berth-namespace";

/// Lease label (value "true") asking the images service to drop the lease when it
/// restarts, for work that cannot outlive the daemon (a commit); other leases last until
/// their TTL.
pub const EPHEMERAL_LEASE_LABEL: &str = "berth.io/lease.ephemeral";

/// gRPC metadata key carrying a lease id: content and snapshots created under it are
/// protected from garbage collection until the lease is deleted or expires.
pub const LEASE_METADATA_KEY: &str = "berth-lease";

pub mod types {
    pub mod v1 {
        tonic::include_proto!("berth.types.v1");
    }
}
pub mod system {
    pub mod v1 {
        tonic::include_proto!("berth.system.v1");
    }
}
pub mod content {
    pub mod v1 {
        tonic::include_proto!("berth.content.v1");
    }
}
pub mod images {
    pub mod v1 {
        tonic::include_proto!("berth.images.v1");
    }
}
pub mod snapshots {
    pub mod v1 {
        tonic::include_proto!("berth.snapshots.v1");
    }
}
pub mod events {
    pub mod v1 {
        tonic::include_proto!("berth.events.v1");
    }
}
pub mod containers {
    pub mod v1 {
        tonic::include_proto!("berth.containers.v1");
    }
}
pub mod tasks {
    pub mod v1 {
        tonic::include_proto!("berth.tasks.v1");
    }
}
pub mod shim {
    pub mod v1 {
        tonic::include_proto!("berth.shim.v1");
    }
}
