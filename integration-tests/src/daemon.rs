//! A berthd started for one test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cleanup;

#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// Extra TOML appended to the generated config file.
    pub config: String,
    /// Extra command-line arguments (e.g. `--services events`).
    pub args: Vec<String>,
    /// Also listen on this TCP address.
    pub tcp: Option<String>,
    /// Environment for the daemon (e.g. OTEL_EXPORTER_OTLP_ENDPOINT).
    pub env: Vec<(String, String)>,
    /// Put the data root on a tmpfs of this many bytes (disk-full tests); it is unmounted
    /// with everything else when the daemon is dropped.
    pub root_tmpfs_bytes: Option<u64>,
}

/// What a CLI invocation printed and returned.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Panics with both streams when the command failed.
    #[track_caller]
    pub fn success(self) -> Output {
        assert_eq!(self.code, 0, "command failed\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

pub struct Daemon {
    base: tempfile::TempDir,
    pub root: PathBuf,
    pub state: PathBuf,
    pub log_dir: PathBuf,
    pub socket: PathBuf,
    pub config_path: PathBuf,
    pub options: DaemonOptions,
    child: Option<Child>,
    log_path: PathBuf,
    /// This daemon's bridge names and addresses; cleaned after the daemon is gone.
    pub net: crate::network::NetSlot,
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with(DaemonOptions::default())
    }

    pub fn start_with(options: DaemonOptions) -> Daemon {
        // Short paths: unix socket paths are limited to 108 bytes.
        let base = tempfile::Builder::new().prefix("berth-it-").tempdir_in("/tmp").expect("creating a temp dir");
        let dir = base.path().to_path_buf();
        let mut daemon = Daemon {
            root: dir.join("root"),
            state: dir.join("state"),
            log_dir: dir.join("logs"),
            socket: dir.join("state/berth.sock"),
            config_path: dir.join("config.toml"),
            log_path: dir.join("berthd.log"),
            options,
            child: None,
            base,
            net: crate::network::NetSlot::acquire(),
        };
        if let Some(bytes) = daemon.options.root_tmpfs_bytes {
            std::fs::create_dir_all(&daemon.root).expect("creating the data root");
            nix::mount::mount(
                Some("tmpfs"),
                &daemon.root,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some(format!("size={bytes},mode=0711").as_str()),
            )
            .expect("mounting a tmpfs on the data root");
        }
        daemon.write_config();
        daemon.spawn();
        daemon
    }

    pub fn base_dir(&self) -> &Path {
        self.base.path()
    }

    pub fn address(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn write_config(&self) {
        let mut hosts = vec![format!("\"{}\"", self.address())];
        if let Some(tcp) = &self.options.tcp {
            hosts.push(format!("\"tcp://{tcp}\""));
        }
        let mut config = format!(
            "data-root = \"{}\"\nexec-root = \"{}\"\nlog-dir = \"{}\"\nhosts = [{}]\n{}\n",
            self.root.display(),
            self.state.display(),
            self.log_dir.display(),
            hosts.join(", "),
            self.options.config
        );
        // Last: a table header ends the top-level keys the options may add.
        if !self.options.config.contains("[network]") {
            config.push_str(&self.net.config());
        }
        std::fs::write(&self.config_path, config).expect("writing the daemon config");
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("daemon log");
        let mut command = Command::new(crate::bin("berthd"));
        command
            .arg("--config")
            .arg(&self.config_path)
            .args(&self.options.args)
            .env("RUST_LOG", std::env::var("BERTHD_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .env("BERTH_SHIM_BINARY", crate::bin_dir().join("berth-shim"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("daemon log"))
            .stderr(log);
        for (key, value) in &self.options.env {
            command.env(key, value);
        }
        self.child = Some(command.spawn().expect("starting berthd"));
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("berthd exited during start-up with {status}; log:\n{}", self.log());
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("berthd did not start listening within 30s; log:\n{}", self.log());
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Runs `berth -H <this daemon> ARGS...`.
    pub fn berth(&self, args: &[&str]) -> Output {
        self.berth_with_input(args, None)
    }

    pub fn berth_with_input(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        self.berth_env(args, &[], stdin)
    }

    /// Like [`Daemon::berth_with_input`], with extra environment (e.g. DOCKER_CONFIG).
    pub fn berth_env(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
        use std::io::Write;
        let mut command = Command::new(crate::bin("berth"));
        command.arg("-H").arg(self.address()).args(args);
        command.envs(env.iter().copied());
        command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("running berth");
        if let Some(input) = stdin
            && let Some(mut pipe) = child.stdin.take()
        {
            let _ = pipe.write_all(input);
        }
        let out = child.wait_with_output().expect("waiting for berth");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `berth inspect NAME`: the one object of Docker's JSON array.
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.berth(&["inspect", name]).success();
        let list: serde_json::Value = serde_json::from_str(&out.stdout).expect("inspect JSON");
        list[0].clone()
    }

    /// SIGKILLs the daemon (not its shims or containers).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Graceful stop (SIGTERM), waiting for the process to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the daemon again on the same directories.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts a stopped or killed daemon again.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the daemon is still running");
        self.spawn();
    }

    /// Mount points still present under this daemon's directories.
    pub fn leftover_mounts(&self) -> Vec<String> {
        cleanup::mounts_below(self.base.path())
    }

    /// Network state this daemon made that still exists on the host: bridge and veth
    /// devices with its names, iptables rules mentioning its addresses, namespace files,
    /// and address leases in its IPAM directory.
    pub fn leftover_network(&self) -> Vec<String> {
        let devices = self.net.devices();
        let mut left: Vec<String> =
            devices.iter().filter(|d| **d != self.net.bridge()).map(|d| format!("device {d}")).collect();
        // veths keep kernel-chosen names; they show up as ports of our bridges.
        for bridge in &devices {
            let ports = std::fs::read_dir(format!("/sys/class/net/{bridge}/brif")).into_iter().flatten().flatten();
            left.extend(ports.map(|p| format!("veth {} on {bridge}", p.file_name().to_string_lossy())));
        }
        left.extend(self.net.iptables_rules().into_iter().map(|(table, rule)| format!("iptables -t {table} {rule}")));
        if let Ok(entries) = std::fs::read_dir(self.state.join("netns")) {
            left.extend(entries.flatten().map(|e| format!("netns {}", e.path().display())));
        }
        if let Ok(networks) = std::fs::read_dir(self.root.join("network/ipam")) {
            for network in networks.flatten() {
                for lease in std::fs::read_dir(network.path()).into_iter().flatten().flatten() {
                    if lease.file_name().to_string_lossy().parse::<std::net::IpAddr>().is_ok() {
                        left.push(format!("lease {}", lease.path().display()));
                    }
                }
            }
        }
        left
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        let base = self.base.path().to_path_buf();
        // Container processes mount things from below the base dir; shims and runc carry
        // it in their command lines.
        for _ in 0..3 {
            let mut pids = cleanup::container_pids(&base);
            pids.extend(cleanup::pids_mentioning(&base.display().to_string()));
            if pids.is_empty() {
                break;
            }
            cleanup::kill_all(&pids);
            std::thread::sleep(Duration::from_millis(100));
        }
        cleanup::unmount_below(&base);
        if std::thread::panicking() {
            eprintln!("--- berthd log ({}) ---\n{}", self.log_path.display(), self.log());
        }
    }
}
