//! Mounts and volumes end to end: bind mounts (ro/rw, -v and --mount), named volumes that
//! outlive containers and are seeded from the image, anonymous volumes for image VOLUMEs,
//! tmpfs mounts, refusal to remove a volume in use, prune.

use std::os::unix::fs::MetadataExt;

use berth_integration_tests::{Daemon, Registry, fixtures, require_root};

fn setup() -> (Registry, Daemon, String) {
    berth_integration_tests::daemon_with_image(fixtures::push_webserver, "web:latest")
}

/// `inspect` of a container, `volume inspect` of a volume.
fn inspect(daemon: &Daemon, kind: &str, name: &str) -> serde_json::Value {
    let args = if kind == "container" { vec!["inspect", name] } else { vec![kind, "inspect", name] };
    let out = daemon.berth(&args).success();
    let list: serde_json::Value = serde_json::from_str(&out.stdout).expect("inspect JSON");
    list[0].clone()
}

fn volume_names(daemon: &Daemon) -> Vec<String> {
    daemon.berth(&["volume", "ls", "-q"]).success().stdout.lines().map(str::to_string).collect()
}

#[test]
fn bind_mounts_read_only_and_read_write() {
    require_root!();
    let (_registry, daemon, image) = setup();
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("greeting"), "from the host\n").unwrap();
    let dir = host_dir.path().display().to_string();

    let out = daemon.berth(&[
        "run",
        "--rm",
        "-v",
        &format!("{dir}:/mnt:ro"),
        &image,
        "sh",
        "-c",
        "cat /mnt/greeting; touch /mnt/x",
    ]);
    assert_ne!(out.code, 0, "a write to a :ro bind mount succeeded");
    assert_eq!(out.stdout, "from the host\n");
    assert!(out.stderr.contains("Read-only file system"), "{}", out.stderr);
    assert!(!host_dir.path().join("x").exists());

    let out =
        daemon.berth(&["run", "--rm", "-v", &format!("{dir}:/mnt"), &image, "sh", "-c", "echo written > /mnt/new"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(host_dir.path().join("new")).unwrap(), "written\n");

    let mount = format!("type=bind,source={dir},target=/m,readonly");
    let out = daemon.berth(&["run", "--rm", "--mount", &mount, &image, "sh", "-c", "cat /m/new && touch /m/y"]);
    assert_ne!(out.code, 0);
    assert_eq!(out.stdout, "written\n");

    // --mount does not create a missing source (Docker's rule); -v does.
    let missing = host_dir.path().join("missing").display().to_string();
    let out =
        daemon.berth(&["run", "--rm", "--mount", &format!("type=bind,source={missing},target=/m"), &image, "true"]);
    assert_eq!(out.code, 125);
    assert!(out.stderr.contains("bind source path does not exist"), "{}", out.stderr);
    let out = daemon.berth(&["run", "--rm", "-v", &format!("{missing}:/m"), &image, "true"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(host_dir.path().join("missing").is_dir());

    let out = daemon.berth(&["create", "--name", "shown", "-v", &format!("{dir}:/mnt:ro"), &image]).success();
    assert_eq!(out.stdout.trim().len(), 64);
    let mounts = inspect(&daemon, "container", "shown")["Mounts"].clone();
    assert_eq!(mounts[0]["Type"], "bind");
    assert_eq!(mounts[0]["Source"], dir);
    assert_eq!(mounts[0]["Destination"], "/mnt");
    assert_eq!(mounts[0]["RW"], false);
    daemon.berth(&["rm", "shown"]).success();

    let out = daemon.berth(&["run", "--rm", "-v", "/a:/b:bogus", &image, "true"]);
    assert_eq!(out.code, 125);
    assert!(out.stderr.contains("invalid mode: bogus"), "{}", out.stderr);
    assert!(daemon.leftover_mounts().is_empty(), "{:?}", daemon.leftover_mounts());
}

#[test]
fn named_volumes_persist_are_seeded_and_refuse_removal_in_use() {
    require_root!();
    let (_registry, daemon, image) = setup();
    // First use of an empty volume copies what the image has at that path.
    let out = daemon.berth(&["run", "--rm", "-v", "store:/data", &image, "cat", "/data/seed.txt"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "seeded\n"), "{}", out.stderr);
    let out = daemon.berth(&["run", "--rm", "-v", "store:/data", &image, "sh", "-c", "echo kept > /data/mine.txt"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = daemon.berth(&["run", "--rm", "-v", "store:/data", &image, "cat", "/data/mine.txt", "/data/seed.txt"]);
    assert_eq!(out.stdout, "kept\nseeded\n", "{}", out.stderr);

    let volume = inspect(&daemon, "volume", "store");
    let mountpoint = volume["Mountpoint"].as_str().unwrap().to_string();
    assert!(mountpoint.starts_with(&daemon.root.display().to_string()) && mountpoint.ends_with("/store/_data"));
    assert_eq!(std::fs::read_to_string(format!("{mountpoint}/mine.txt")).unwrap(), "kept\n");
    assert_eq!(volume["Driver"], "local");

    // A volume that already has content is not seeded again (nocopy-like behaviour on reuse),
    // and an image path over a fresh volume keeps the image directory's owner and mode.
    let meta = std::fs::metadata(&mountpoint).unwrap();
    assert_eq!(meta.uid(), 0);

    let id =
        daemon.berth(&["run", "-d", "--name", "user", "-v", "store:/data", &image]).success().stdout.trim().to_string();
    let out = daemon.berth(&["volume", "rm", "store"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("volume is in use") && out.stderr.contains(&id), "{}", out.stderr);
    let used_by = inspect(&daemon, "volume", "store")["UsedBy"].clone();
    assert_eq!(used_by, serde_json::json!([id]));
    // rm -v leaves named volumes alone.
    daemon.berth(&["rm", "-f", "-v", "user"]).success();
    assert!(volume_names(&daemon).contains(&"store".to_string()));
    daemon.berth(&["volume", "rm", "store"]).success();
    assert!(!std::path::Path::new(&mountpoint).exists());
    let out = daemon.berth(&["volume", "inspect", "store"]);
    assert_eq!(out.code, 1);

    // volume create, --mount type=volume with nocopy.
    assert_eq!(daemon.berth(&["volume", "create", "--label", "team=a", "made"]).success().stdout, "made\n");
    let out =
        daemon.berth(&["run", "--rm", "--mount", "source=made,target=/data,volume-nocopy", &image, "ls", "/data"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{}", out.stderr);
    let listed = daemon.berth(&["volume", "ls", "--filter", "label=team=a"]).success().stdout;
    let rows: Vec<Vec<&str>> = listed.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows, [vec!["DRIVER", "VOLUME", "NAME"], vec!["local", "made"]]);
    daemon.berth(&["volume", "rm", "made"]).success();
    assert!(daemon.leftover_mounts().is_empty(), "{:?}", daemon.leftover_mounts());
}

#[test]
fn anonymous_volumes_for_image_volumes_and_prune() {
    require_root!();
    let (_registry, daemon, image) = setup();
    daemon.berth(&["run", "-d", "--name", "anon", &image]).success();
    let mounts = inspect(&daemon, "container", "anon")["Mounts"].clone();
    assert_eq!(mounts.as_array().unwrap().len(), 1, "{mounts}");
    assert_eq!(mounts[0]["Type"], "volume");
    assert_eq!(mounts[0]["Destination"], "/data");
    let name = mounts[0]["Name"].as_str().unwrap().to_string();
    assert_eq!(name.len(), 64);
    let out = daemon.berth(&["exec", "anon", "cat", "/data/seed.txt"]).success();
    assert_eq!(out.stdout, "seeded\n");
    // rm -v takes the anonymous volume with the container.
    daemon.berth(&["rm", "-f", "-v", "anon"]).success();
    assert!(volume_names(&daemon).is_empty(), "{:?}", volume_names(&daemon));

    // Without -v it stays, dangling, until pruned; --rm removes it like Docker.
    daemon.berth(&["run", "--name", "left", "-v", "/scratch", &image, "true"]).success();
    // `run` returns when the process ends; the daemon records the exit right after.
    daemon.berth(&["wait", "left"]).success();
    assert_eq!(volume_names(&daemon).len(), 2, "the image's /data and -v /scratch");
    daemon.berth(&["rm", "left"]).success();
    assert_eq!(volume_names(&daemon).len(), 2);
    daemon.berth(&["volume", "create", "named"]).success();
    let dangling = daemon.berth(&["volume", "ls", "-q", "--filter", "dangling=true"]).success().stdout;
    assert_eq!(dangling.lines().count(), 3, "{dangling}");
    let out = daemon.berth(&["volume", "prune", "-f"]).success();
    assert!(out.stdout.starts_with("Deleted Volumes:\n"), "{}", out.stdout);
    assert!(out.stdout.contains("Total reclaimed space: "), "{}", out.stdout);
    assert_eq!(volume_names(&daemon), ["named"], "named volumes survive a plain prune");
    daemon.berth(&["volume", "prune", "-f", "-a"]).success();
    assert!(volume_names(&daemon).is_empty());

    let out = daemon.berth(&["run", "--rm", &image, "true"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(volume_names(&daemon).is_empty(), "--rm left {:?}", volume_names(&daemon));
    assert!(daemon.leftover_mounts().is_empty(), "{:?}", daemon.leftover_mounts());
}

#[test]
fn tmpfs_mounts() {
    require_root!();
    let (_registry, daemon, image) = setup();
    let out = daemon.berth(&[
        "run",
        "--rm",
        "--tmpfs",
        "/run:size=1m",
        "--mount",
        "type=tmpfs,target=/scratch,tmpfs-size=2m",
        &image,
        "sh",
        "-c",
        "grep -E ' /(run|scratch) ' /proc/mounts; echo x > /run/file && cat /run/file",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("tmpfs /run tmpfs") && l.contains("size=1024k") && l.contains("noexec")),
        "{}",
        out.stdout
    );
    assert!(lines.iter().any(|l| l.starts_with("tmpfs /scratch tmpfs") && l.contains("size=2048k")), "{}", out.stdout);
    assert_eq!(lines.last(), Some(&"x"));
    assert!(daemon.leftover_mounts().is_empty(), "{:?}", daemon.leftover_mounts());
}
