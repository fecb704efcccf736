//! The containers service's errors and their one mapping to gRPC codes.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("No such container: {0}")]
    NotFound(String),
    #[error("No such exec instance: {0}")]
    ExecNotFound(String),
    #[error("network {0} not found")]
    NetworkNotFound(String),
    #[error("get {0}: no such volume")]
    VolumeNotFound(String),
    /// A name already taken by another network or volume.
    #[error("{0}")]
    Conflict(String),
    /// Setting up or tearing down networking on the host failed (CNI, bridge, netns).
    #[error("{0}")]
    Network(String),
    #[error("{0}")]
    Ambiguous(String),
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."
    )]
    NameInUse { name: String, id: String },
    #[error("Invalid container name ({0}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    BadName(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Spec(#[from] crate::spec::SpecError),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("container database: {0}")]
    Store(#[from] sled::Error),
    #[error("decoding a stored container: {0}")]
    Decode(#[from] prost::DecodeError),
    /// A failure reported by another service or a shim, passed on with its code.
    #[error("{0}")]
    Upstream(Status),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Error {
        Error::Upstream(status)
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let code = match &error {
            Error::NotFound(_) | Error::ExecNotFound(_) | Error::NetworkNotFound(_) | Error::VolumeNotFound(_) => {
                Code::NotFound
            }
            Error::Conflict(_) => Code::AlreadyExists,
            Error::Network(_) => Code::Internal,
            Error::Ambiguous(_) | Error::BadName(_) | Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::Spec(crate::spec::SpecError::Build(_)) => Code::Internal,
            Error::Spec(_) => Code::InvalidArgument,
            Error::NameInUse { .. } => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Io { source, .. } => berth_common::error::io_code(source),
            Error::Store(_) | Error::Decode(_) => Code::Internal,
            Error::Upstream(status) => return status.clone(),
        };
        let message = match &error {
            Error::Io { context, source } => berth_common::error::io_message(context, source),
            other => other.to_string(),
        };
        Status::new(code, message)
    }
}
