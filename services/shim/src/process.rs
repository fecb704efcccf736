//! One process the shim supervises: the container's init or an exec.

use std::sync::{Arc, Mutex, MutexGuard};

use berth_common::task::ExitRecord;
use berth_proto::shim::v1::Status;
use tokio::sync::watch;

use crate::io::IoHub;

struct State {
    pid: u32,
    status: Status,
}

pub struct Process {
    /// Empty for the container's init process.
    pub exec_id: String,
    pub terminal: bool,
    pub stdin: bool,
    pub io: Arc<IoHub>,
    state: Mutex<State>,
    exit: watch::Sender<Option<ExitRecord>>,
}

impl Process {
    pub fn new(exec_id: &str, terminal: bool, stdin: bool, io: IoHub) -> Arc<Process> {
        Arc::new(Process {
            exec_id: exec_id.to_string(),
            terminal,
            stdin,
            io: Arc::new(io),
            state: Mutex::new(State { pid: 0, status: Status::Created }),
            exit: watch::channel(None).0,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn pid(&self) -> u32 {
        self.state().pid
    }

    pub fn set_pid(&self, pid: u32) {
        self.state().pid = pid;
    }

    pub fn status(&self) -> Status {
        self.state().status
    }

    /// Records a status change unless the process already stopped (an exit that raced a
    /// start or a pause wins).
    pub fn set_status(&self, status: Status) {
        let mut state = self.state();
        if state.status != Status::Stopped {
            state.status = status;
        }
    }

    pub fn exit(&self) -> Option<ExitRecord> {
        self.exit.borrow().clone()
    }

    pub fn set_exited(&self, record: ExitRecord) {
        self.state().status = Status::Stopped;
        self.exit.send_replace(Some(record));
    }

    /// Waits for the process to exit.
    pub async fn wait(&self) -> ExitRecord {
        let mut exit = self.exit.subscribe();
        loop {
            if let Some(record) = exit.borrow_and_update().clone() {
                return record;
            }
            if exit.changed().await.is_err() {
                // The sender lives as long as self; unreachable in practice.
                std::future::pending::<()>().await;
            }
        }
    }
}
