//! The snapshots service's errors and their gRPC codes.

use berth_common::error::{io_code, io_message};
use tonic::{Code, Status};

use crate::store::StoreError;
use crate::unpack::UnpackError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// A call to another service failed.
    #[error("{service}: {status}")]
    Dependency { service: &'static str, status: Status },
    /// The request stream broke or ended early.
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        match err {
            Error::NotFound(m) => Status::not_found(m),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::Io { context, source } => Status::new(io_code(&source), io_message(&context, &source)),
            Error::Store(e) => Status::internal(e.to_string()),
            Error::Unpack(UnpackError::Invalid(m)) => Status::invalid_argument(format!("invalid layer: {m}")),
            Error::Unpack(UnpackError::Source(e)) => Status::aborted(format!("reading the layer failed: {e}")),
            Error::Unpack(UnpackError::Io { context, source }) => {
                Status::new(io_code(&source), io_message(&format!("writing {context}"), &source))
            }
            Error::Dependency { service, status } => berth_common::error::from_dependency(service, status),
            Error::Aborted(m) => Status::new(Code::Aborted, m),
            Error::Internal(m) => Status::internal(m),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
