//! Helpers for mapping errors to gRPC status codes. Each service crate has its own
//! `thiserror` error type with one `From<Error> for tonic::Status`; these helpers keep the
//! mapping of operating-system errors consistent between them.

use tonic::Code;

/// The gRPC code for an I/O error: a full disk is `ResourceExhausted`, a missing file
/// `NotFound`, and so on; anything unexpected is `Internal`.
pub fn io_code(err: &std::io::Error) -> Code {
    use std::io::ErrorKind;
    match err.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => return Code::ResourceExhausted,
        Some(libc::EROFS) => return Code::FailedPrecondition,
        _ => {}
    }
    match err.kind() {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::InvalidInput | ErrorKind::InvalidData => Code::InvalidArgument,
        ErrorKind::TimedOut => Code::DeadlineExceeded,
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// A readable message for an I/O error; a full disk says so in words people search for.
pub fn io_message(context: &str, err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::ENOSPC) => format!("{context}: no space left on device"),
        _ => format!("{context}: {err}"),
    }
}

/// Wraps a status from a call to another service so the caller sees which dependency
/// failed; Unavailable gets a hint.
pub fn from_dependency(service: &str, status: tonic::Status) -> tonic::Status {
    let message = if status.code() == Code::Unavailable {
        format!("the {service} service is unavailable: {} (is it running and reachable?)", status.message())
    } else {
        status.message().to_string()
    };
    tonic::Status::new(status.code(), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_is_resource_exhausted() {
        let err = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(io_code(&err), Code::ResourceExhausted);
        assert!(io_message("writing blob", &err).contains("no space left on device"));
        assert_eq!(io_code(&std::io::Error::from(std::io::ErrorKind::NotFound)), Code::NotFound);
    }
}
