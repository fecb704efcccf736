//! The container log: stdout and stderr in the CRI format, rotated by size
//! (`<log>` -> `<log>.1` -> ... -> `<log>.<max_files>`, the oldest dropped).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use berth_common::crilog::{LineSplitter, Stream};
use chrono::Utc;

pub struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: u32,
    stdout: LineSplitter,
    stderr: LineSplitter,
    buffer: Vec<u8>,
}

impl LogFile {
    /// `max_size` 0 disables rotation.
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> std::io::Result<LogFile> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            max_files,
            stdout: LineSplitter::new(Stream::Stdout),
            stderr: LineSplitter::new(Stream::Stderr),
            buffer: Vec::new(),
        })
    }

    pub fn write(&mut self, stream: Stream, data: &[u8]) -> std::io::Result<()> {
        let splitter = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        splitter.push(data, Utc::now(), &mut self.buffer);
        self.flush_buffer()
    }

    /// Writes out an unfinished last line (the stream ended without a newline).
    pub fn finish(&mut self, stream: Stream) -> std::io::Result<()> {
        let splitter = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        splitter.flush(Utc::now(), &mut self.buffer);
        self.flush_buffer()
    }

    fn flush_buffer(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.buffer)?;
        self.size += self.buffer.len() as u64;
        self.buffer.clear();
        if self.max_size > 0 && self.size >= self.max_size {
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.max_files == 0 {
            self.file.set_len(0)?;
        } else {
            for n in (1..self.max_files).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
            self.file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_cri_lines_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut log = LogFile::open(&path, 200, 2).unwrap();
        log.write(Stream::Stdout, b"hello\nwor").unwrap();
        log.write(Stream::Stderr, b"oops\n").unwrap();
        log.write(Stream::Stdout, b"ld\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].ends_with(" stdout F hello"));
        assert!(lines[1].ends_with(" stderr F oops"));
        assert!(lines[2].ends_with(" stdout F world"));
        for i in 0..20 {
            log.write(Stream::Stdout, format!("line {i}\n").as_bytes()).unwrap();
        }
        log.write(Stream::Stdout, b"tail").unwrap();
        log.finish(Stream::Stdout).unwrap();
        assert!(dir.path().join("c.log.1").exists());
        assert!(dir.path().join("c.log.2").exists());
        assert!(!dir.path().join("c.log.3").exists());
        assert!(std::fs::metadata(&path).unwrap().len() < 200);
        let last = std::fs::read_to_string(&path).unwrap();
        assert!(last.trim_end().ends_with("stdout P tail"), "{last}");
    }
}
