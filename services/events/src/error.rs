//! The event service's errors and their gRPC codes.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("event log storage failed: {0}")]
    Storage(#[from] sled::Error),
    #[error("the event log is damaged: {0}")]
    Corrupt(String),
    #[error("the event service is shutting down; retry once it is back")]
    ShuttingDown,
    /// A batch write failed; every publisher in the batch gets the same status.
    #[error("{}", .0.message())]
    Unwritten(Status),
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let code = match &error {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::Storage(sled::Error::Io(io)) => berth_common::error::io_code(io),
            Error::Storage(_) | Error::Corrupt(_) => Code::Internal,
            Error::ShuttingDown => Code::Unavailable,
            Error::Unwritten(status) => return status.clone(),
        };
        let message = match &error {
            Error::Storage(sled::Error::Io(io)) => berth_common::error::io_message("writing the event log", io),
            _ => error.to_string(),
        };
        Status::new(code, message)
    }
}
