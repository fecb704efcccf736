//! The local terminal during an interactive session: raw mode (restored on every way out,
//! including panics, by a guard) and its size.

use std::io::IsTerminal;
use std::os::fd::AsFd;

use berth_proto::types::v1::WindowSize;
use nix::sys::termios::{self, SetArg, Termios};

/// Puts stdin's terminal in raw mode until dropped.
pub struct RawMode {
    original: Termios,
}

impl RawMode {
    /// Raw mode on stdin, if stdin is a terminal.
    pub fn enable() -> std::io::Result<Option<RawMode>> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let original = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = original.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)?;
        Ok(Some(RawMode { original }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.original);
    }
}

/// The size of the terminal on stdout (or stdin), if either is one.
pub fn size() -> Option<WindowSize> {
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCGWINSZ writes a winsize into a valid, owned struct.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 {
            return Some(WindowSize { width: u32::from(ws.ws_col), height: u32::from(ws.ws_row) });
        }
    }
    None
}

pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}
