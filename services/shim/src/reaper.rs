//! Reaping children. The shim is a child subreaper: runc's container processes are
//! re-parented to it, so one SIGCHLD handler reaps every child with `waitpid(-1)` and hands
//! each exit to whoever waits for that pid. Nothing else in the shim may call `wait`
//! (which is why runtime commands are spawned with std and awaited here, not with
//! tokio::process). An exit can arrive before anyone asks for it (a pid read from a pid
//! file after the process already died), so unclaimed exits are kept for a while.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

/// How a process ended: an exit code, or 128 + the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: u32,
    pub status: u32,
}

/// Unclaimed exits kept at most (orphans nobody asks about).
const MAX_UNCLAIMED: usize = 1024;

#[derive(Debug, Default)]
struct State {
    waiters: HashMap<u32, Vec<oneshot::Sender<Exit>>>,
    unclaimed: HashMap<u32, Exit>,
    unclaimed_order: VecDeque<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct Reaper {
    state: Arc<Mutex<State>>,
}

impl Reaper {
    /// Installs the SIGCHLD handler and starts reaping. Must run before any child is
    /// spawned.
    pub fn start() -> std::io::Result<Reaper> {
        let reaper = Reaper::default();
        let mut sigchld = signal(SignalKind::child())?;
        let task_reaper = reaper.clone();
        tokio::spawn(async move {
            loop {
                task_reaper.reap_all();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// A receiver for the exit of `pid` (immediately ready if it already exited).
    pub fn subscribe(&self, pid: u32) -> oneshot::Receiver<Exit> {
        let (sender, receiver) = oneshot::channel();
        let mut state = self.lock();
        if let Some(exit) = state.unclaimed.remove(&pid) {
            state.unclaimed_order.retain(|p| *p != pid);
            let _ = sender.send(exit);
        } else {
            state.waiters.entry(pid).or_default().push(sender);
        }
        receiver
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn reap_all(&self) {
        loop {
            let exit = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => Exit { pid: pid.as_raw() as u32, status: code as u32 },
                Ok(WaitStatus::Signaled(pid, signal, _)) => {
                    Exit { pid: pid.as_raw() as u32, status: 128 + signal as u32 }
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            self.deliver(exit);
        }
    }

    fn deliver(&self, exit: Exit) {
        let mut state = self.lock();
        match state.waiters.remove(&exit.pid) {
            Some(waiters) => {
                for waiter in waiters {
                    let _ = waiter.send(exit);
                }
            }
            None => {
                if state.unclaimed_order.len() >= MAX_UNCLAIMED
                    && let Some(oldest) = state.unclaimed_order.pop_front()
                {
                    state.unclaimed.remove(&oldest);
                }
                state.unclaimed.insert(exit.pid, exit);
                state.unclaimed_order.push_back(exit.pid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::zombie_processes)] // the reaper under test waits for them
    fn exits_reach_waiters_registered_before_or_after() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let reaper = Reaper::start().unwrap();
            let early = std::process::Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
            let early_pid = early.id();
            let killed = std::process::Command::new("sleep").arg("30").spawn().unwrap();
            let killed_pid = killed.id();
            let waiting = reaper.subscribe(killed_pid);
            // Let the first one exit (and be reaped) before anyone subscribes to it.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let exit = reaper.subscribe(early_pid).await.unwrap();
            assert_eq!(exit, Exit { pid: early_pid, status: 3 });
            nix::sys::signal::kill(Pid::from_raw(killed_pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
            let exit = waiting.await.unwrap();
            assert_eq!(exit, Exit { pid: killed_pid, status: 128 + 9 });
        });
    }
}
