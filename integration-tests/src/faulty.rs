//! A fault-injecting HTTP proxy in front of the real registry, on 127.0.0.1: blob
//! requests can be answered with an error status or stall after part of the body, so tests
//! see what a flaky or hanging registry does to a pull. Everything else is passed through
//! unchanged (one request per connection: the proxy asks the registry to close after each).
//!
//! Written by hand because the faults need to sit inside an HTTP response body, which no
//! packaged proxy on the machine can do on cue.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does to blob requests (`GET /v2/<name>/blobs/<digest>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Pass everything through.
    None,
    /// Answer every blob request with this status and no body.
    Status(u16),
    /// Send the headers and this many body bytes, then go silent (the connection stays open).
    StallAfter(usize),
}

struct Shared {
    upstream: String,
    fault: Mutex<Fault>,
    blob_requests: AtomicUsize,
    stopping: AtomicBool,
}

pub struct FaultyProxy {
    shared: Arc<Shared>,
    /// "127.0.0.1:PORT"
    pub address: String,
}

impl FaultyProxy {
    pub fn start(upstream: &str, fault: Fault) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy on loopback");
        let address = listener.local_addr().expect("proxy address").to_string();
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            fault: Mutex::new(fault),
            blob_requests: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        });
        let accept_shared = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accept_shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let shared = accept_shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(&shared, client);
                });
            }
        });
        FaultyProxy { shared, address }
    }

    pub fn set_fault(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
    }

    /// Blob GETs seen so far (faulty or not).
    pub fn blob_requests(&self) -> usize {
        self.shared.blob_requests.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.address);
    }
}

/// The request line and headers, as sent.
fn read_head(reader: &mut impl BufRead) -> io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line);
    }
}

fn content_length(head: &[String]) -> usize {
    head.iter()
        .filter_map(|h| h.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

fn serve(shared: &Shared, mut client: TcpStream) -> io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let head = read_head(&mut reader)?;
    let mut body = vec![0; content_length(&head)];
    reader.read_exact(&mut body)?;
    let request_line = head.first().cloned().unwrap_or_default();
    let is_blob_get = request_line.starts_with("GET ") && request_line.contains("/blobs/sha256:");
    let fault = if is_blob_get {
        shared.blob_requests.fetch_add(1, Ordering::SeqCst);
        *shared.fault.lock().unwrap_or_else(|p| p.into_inner())
    } else {
        Fault::None
    };
    if let Fault::Status(code) = fault {
        let answer = format!("HTTP/1.1 {code} Injected Fault\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        client.write_all(answer.as_bytes())?;
        return client.shutdown(Shutdown::Both);
    }

    let mut upstream = TcpStream::connect(&shared.upstream)?;
    let mut forwarded = String::new();
    for line in head.iter().filter(|l| !l.to_ascii_lowercase().starts_with("connection:")) {
        forwarded.push_str(line);
        forwarded.push_str("\r\n");
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    upstream.write_all(forwarded.as_bytes())?;
    upstream.write_all(&body)?;

    match fault {
        Fault::StallAfter(bytes) => {
            let mut upstream = BufReader::new(upstream);
            let response_head = read_head(&mut upstream)?;
            let mut text = response_head.join("\r\n");
            text.push_str("\r\n\r\n");
            client.write_all(text.as_bytes())?;
            let mut part = vec![0; bytes.min(content_length(&response_head))];
            upstream.read_exact(&mut part)?;
            client.write_all(&part)?;
            client.flush()?;
            // Silent, not closed: only the client's own timeout (or its going away) ends it.
            client.set_read_timeout(Some(Duration::from_millis(100)))?;
            while !shared.stopping.load(Ordering::SeqCst) {
                // Ok(0): the client hung up; a timeout: it is still waiting.
                if client.peek(&mut [0; 1]).is_ok_and(|n| n == 0) {
                    break;
                }
            }
            Ok(())
        }
        _ => {
            io::copy(&mut upstream, &mut client)?;
            client.shutdown(Shutdown::Both)
        }
    }
}
