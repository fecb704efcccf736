//! The images service's one error type and its mapping to gRPC status codes.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("image database: {0}")]
    Db(#[from] sled::Error),
    #[error("invalid digest {0:?}: expected sha256:<64 hex digits>")]
    InvalidDigest(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Conflict(String),
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch { what: String, expected: String, actual: String },
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch { what: String, expected: u64, actual: u64 },
    #[error("{0}")]
    Registry(String),
    #[error("registry requires authentication: {0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Dependency(Status),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Cancelled(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }
}

/// Adds context to I/O results.
pub trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io { context: context(), source })
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        match err {
            Error::Io { context, source } => {
                Status::new(berth_common::error::io_code(&source), berth_common::error::io_message(&context, &source))
            }
            Error::Db(e) => Status::internal(format!("image database: {e}")),
            Error::InvalidDigest(_) | Error::InvalidArgument(_) => Status::invalid_argument(err.to_string()),
            Error::NotFound(_) => Status::not_found(err.to_string()),
            Error::AlreadyExists(_) => Status::already_exists(err.to_string()),
            Error::FailedPrecondition(_) | Error::Conflict(_) => Status::failed_precondition(err.to_string()),
            Error::DigestMismatch { .. } | Error::SizeMismatch { .. } => Status::data_loss(err.to_string()),
            Error::Registry(_) => Status::unavailable(err.to_string()),
            Error::Unauthenticated(_) => Status::unauthenticated(err.to_string()),
            Error::Unsupported(_) => Status::unimplemented(err.to_string()),
            Error::Dependency(status) => status,
            Error::Internal(_) => Status::internal(err.to_string()),
            Error::Cancelled(_) => Status::cancelled(err.to_string()),
        }
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Error {
        Error::Dependency(status)
    }
}

/// True when a dependency answered that it does not implement the call (a service whose
/// issue has not landed yet).
pub fn is_unimplemented(status: &Status) -> bool {
    status.code() == Code::Unimplemented
}
