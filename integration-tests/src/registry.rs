//! A real CNCF distribution registry (Debian `docker-registry`) on 127.0.0.1, with its own
//! storage directory, stopped when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    dir: tempfile::TempDir,
    child: Child,
    /// "127.0.0.1:PORT"
    pub address: String,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with_auth(None)
    }

    /// With `Some(htpasswd_path)`, the registry requires basic auth.
    pub fn start_with_auth(htpasswd: Option<&Path>) -> Registry {
        let dir = tempfile::Builder::new().prefix("berth-registry-").tempdir().expect("registry temp dir");
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let auth = htpasswd
            .map(|path| format!("auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n", path.display()))
            .unwrap_or_default();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n{auth}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("registry log"))
            .stderr(log)
            .spawn()
            .expect("starting docker-registry (apt-get install docker-registry)");
        let registry = Registry { dir, child, address };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&self.address).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("docker-registry did not listen on {} within 20s", self.address);
    }

    /// Where the registry keeps blobs (for corruption tests).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}
