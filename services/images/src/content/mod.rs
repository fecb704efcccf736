//! The content store and its gRPC service (`berth.content.v1`).

pub mod service;
pub mod store;
