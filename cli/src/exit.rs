//! Exit codes as Docker uses them: 0 on success; 1 when a command fails; for commands
//! that run a container (run, start -a, exec), 125 when the engine fails, 126 when the
//! command cannot be invoked, 127 when it is not found, and otherwise the container's own
//! exit code.

use std::process::ExitCode;

pub const GENERAL_FAILURE: u8 = 1;
pub const CLI_FAILURE: u8 = 125;

/// A failure with the exit code the process should end with.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    /// Printed to stderr when set.
    pub error: Option<anyhow::Error>,
}

impl Exit {
    /// A container's exit status, passed through silently.
    pub fn status(code: i32) -> Exit {
        Exit { code: (code & 0xff) as u8, error: None }
    }

    pub fn with_code(code: u8, error: anyhow::Error) -> Exit {
        Exit { code, error: Some(error) }
    }
}

impl From<anyhow::Error> for Exit {
    fn from(error: anyhow::Error) -> Exit {
        Exit { code: GENERAL_FAILURE, error: Some(error) }
    }
}

pub type Outcome = Result<(), Exit>;

pub fn report(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(exit) => {
            if let Some(error) = exit.error {
                eprintln!("Error: {}", describe(&error));
            }
            ExitCode::from(exit.code)
        }
    }
}

/// A gRPC status reads best as its message alone; other errors with their causes.
fn describe(error: &anyhow::Error) -> String {
    if let Some(status) = error.downcast_ref::<tonic::Status>() {
        return status.message().to_string();
    }
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        if let Some(status) = cause.downcast_ref::<tonic::Status>() {
            text.push_str(": ");
            text.push_str(status.message());
            break;
        }
        text.push_str(": ");
        text.push_str(&cause.to_string());
    }
    text
}
