//! Interactive containers and inspection: -it through a real pty, detach and attach,
//! exec -it, several attached clients, cp (with a hostile symlink), diff, commit, export,
//! stats.

use std::process::Command;
use std::time::Duration;

use berth_integration_tests::terminal::Terminal;
use berth_integration_tests::{Daemon, Registry, require_root};

fn setup() -> (Registry, Daemon, String) {
    berth_integration_tests::daemon_with_busybox()
}

fn berth_command(daemon: &Daemon, args: &[&str]) -> Command {
    let mut command = Command::new(berth_integration_tests::bin("berth"));
    command.arg("-H").arg(daemon.address()).args(args);
    command
}

fn state(daemon: &Daemon, name: &str) -> serde_json::Value {
    let out = daemon.berth(&["inspect", name]).success();
    serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()[0]["State"].clone()
}

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn tty_detach_attach_and_exec() {
    require_root!();
    let (_registry, daemon, image) = setup();
    let mut run = Terminal::spawn(&mut berth_command(&daemon, &["run", "-it", "--name", "shell", &image, "sh"]));
    run.expect("# ", WAIT);
    run.type_text(b"echo hello-$((1+2)); stty size\r");
    run.expect("hello-3", WAIT);
    // The container's terminal has the size of ours.
    run.expect("40 100", WAIT);
    // Ctrl-P Ctrl-Q leaves it running.
    run.type_text(&[0x10, 0x11]);
    assert_eq!(run.wait(WAIT), 0, "{}", run.output());
    assert_eq!(state(&daemon, "shell")["Running"], true);

    let mut attach = Terminal::spawn(&mut berth_command(&daemon, &["attach", "shell"]));
    std::thread::sleep(Duration::from_millis(500));
    attach.type_text(b"echo back-again\r");
    attach.expect("back-again", WAIT);
    attach.type_text(b"exit 5\r");
    assert_eq!(attach.wait(WAIT), 5, "{}", attach.output());
    assert_eq!(state(&daemon, "shell")["ExitCode"], 5);

    daemon.berth(&["run", "-d", "--name", "svc", &image, "sleep", "1000"]).success();
    let mut exec = Terminal::spawn(&mut berth_command(&daemon, &["exec", "-it", "svc", "sh"]));
    exec.expect("# ", WAIT);
    exec.type_text(b"stty size; tty; exit 9\r");
    exec.expect("40 100", WAIT);
    exec.expect("/dev/pts/", WAIT);
    assert_eq!(exec.wait(WAIT), 9, "{}", exec.output());

    // -it needs a terminal on stdin.
    let out = daemon.berth(&["run", "-it", "--rm", &image, "true"]);
    assert_eq!(out.code, 125);
    assert!(out.stderr.contains("not a TTY"), "{}", out.stderr);
    daemon.berth(&["rm", "-f", "shell", "svc"]).success();
}

#[test]
fn several_clients_attach_at_once() {
    require_root!();
    let (_registry, daemon, image) = setup();
    daemon
        .berth(&["run", "-d", "--name", "talker", &image, "sh", "-c", "sleep 2; echo one; sleep 0.5; echo two"])
        .success();
    let spawn = || berth_command(&daemon, &["attach", "talker"]).output();
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(spawn);
        let b = scope.spawn(spawn);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    for out in [a, b] {
        assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\n", "{}", String::from_utf8_lossy(&out.stderr));
    }
    daemon.berth(&["rm", "talker"]).success();
}

#[test]
fn cp_stays_inside_the_container() {
    require_root!();
    let (_registry, daemon, image) = setup();
    let local = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(local.path().join("in/sub")).unwrap();
    std::fs::write(local.path().join("in/a.txt"), "alpha").unwrap();
    std::fs::write(local.path().join("in/sub/b.txt"), "beta").unwrap();
    daemon.berth(&["run", "-d", "--name", "box", &image, "sleep", "1000"]).success();
    daemon.berth(&["exec", "box", "sh", "-c", "ln -s / /etc/evil; echo secret > /root/s.txt"]).success();

    let out_file = local.path().join("s.txt");
    daemon.berth(&["cp", "box:/root/s.txt", out_file.to_str().unwrap()]).success();
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "secret\n");

    let source = local.path().join("in");
    daemon.berth(&["cp", source.to_str().unwrap(), "box:/tmp/"]).success();
    let out = daemon.berth(&["exec", "box", "cat", "/tmp/in/sub/b.txt"]).success();
    assert_eq!(out.stdout, "beta");
    // Onto a missing path the copy takes that name.
    daemon.berth(&["cp", source.to_str().unwrap(), "box:/tmp/renamed"]).success();
    daemon.berth(&["exec", "box", "test", "-f", "/tmp/renamed/a.txt"]).success();

    // The container's symlink to "/" is the container's root, not the host's.
    let marker = format!("berth-cp-escape-{}", std::process::id());
    daemon
        .berth(&["cp", local.path().join("in/a.txt").to_str().unwrap(), &format!("box:/etc/evil/tmp/{marker}")])
        .success();
    assert!(!std::path::Path::new("/tmp").join(&marker).exists(), "cp wrote through the symlink onto the host");
    daemon.berth(&["exec", "box", "test", "-f", &format!("/tmp/{marker}")]).success();
    let leaked = local.path().join("passwd");
    daemon.berth(&["cp", "box:/etc/evil/etc/passwd", leaked.to_str().unwrap()]).success();
    let text = std::fs::read_to_string(&leaked).unwrap();
    assert_eq!(text, "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n", "host file leaked");

    // Stopped containers work too, and "-" streams a tar.
    daemon.berth(&["stop", "-t", "0", "box"]).success();
    let out = Command::new(berth_integration_tests::bin("berth"))
        .args(["-H", &daemon.address(), "cp", "box:/root", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut names: Vec<String> = tar::Archive::new(out.stdout.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["root", "root/s.txt"]);
    assert!(daemon.leftover_mounts().is_empty(), "{:?}", daemon.leftover_mounts());
    daemon.berth(&["rm", "box"]).success();
}

#[test]
fn diff_commit_export_stats() {
    require_root!();
    let (_registry, daemon, image) = setup();
    daemon
        .berth(&[
            "run",
            "--name",
            "changed",
            &image,
            "sh",
            "-c",
            "echo data > /root/new.txt; rm /etc/group; echo x >> /etc/passwd",
        ])
        .success();
    let diff = daemon.berth(&["diff", "changed"]).success().stdout;
    let lines: Vec<&str> = diff.lines().collect();
    assert_eq!(lines, ["C /etc", "D /etc/group", "C /etc/passwd", "C /root", "A /root/new.txt"], "{diff}");

    let image_id = daemon
        .berth(&["commit", "-m", "added a file", "-c", "CMD [\"cat\", \"/root/new.txt\"]", "changed", "committed:v1"])
        .success()
        .stdout
        .trim()
        .to_string();
    assert!(image_id.starts_with("sha256:"), "{image_id}");
    let out = daemon.berth(&["run", "--rm", "committed:v1"]).success();
    assert_eq!(out.stdout, "data\n");
    let out = daemon.berth(&["run", "--rm", "committed:v1", "cat", "/etc/group"]);
    assert_ne!(out.code, 0, "the deletion is part of the committed layer");
    let images = daemon.berth(&["images"]).success().stdout;
    assert!(images.contains("committed") && images.contains("v1"), "{images}");

    let tarball = tempfile::NamedTempFile::new().unwrap();
    daemon.berth(&["export", "-o", tarball.path().to_str().unwrap(), "changed"]).success();
    let names: Vec<String> = tar::Archive::new(std::fs::File::open(tarball.path()).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n.trim_start_matches("./") == "root/new.txt"), "{names:?}");
    assert!(names.iter().any(|n| n.trim_start_matches("./") == "bin/busybox"));
    assert!(!names.iter().any(|n| n.trim_start_matches("./") == "etc/group"));

    daemon.berth(&["run", "-d", "--name", "busy", "-m", "64m", &image, "sleep", "1000"]).success();
    let stats = daemon.berth(&["stats", "--no-stream"]).success().stdout;
    assert!(stats.starts_with("CONTAINER ID   NAME"), "{stats}");
    assert!(stats.contains("busy") && stats.contains("/ 64MiB"), "{stats}");
    daemon.berth(&["rm", "-f", "busy", "changed"]).success();
}
