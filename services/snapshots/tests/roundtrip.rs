//! Root tests: applying a layer and diffing it again gives the same tree (whiteouts, opaque
//! directories, hard links, symlinks, xattrs, devices, a 1 GiB sparse file), and real
//! overlay mounts of the result show what the layers say.

mod common;

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use berth_snapshots::archive::{self, TarWriter};
use berth_snapshots::changes::ChangeKind;
use berth_snapshots::diff::{DiffSource, Output, produce_layer};
use berth_snapshots::driver::Driver;
use berth_snapshots::fsutil;
use berth_snapshots::store::Kind;
use common::*;
use nix::sys::stat::SFlag;

const GIB: u64 = 1 << 30;

fn set_xattr(path: &Path, key: &str, value: &[u8]) {
    let parent = fsutil::open_dir_path(path.parent().unwrap()).unwrap();
    fsutil::set_xattr_at(parent.as_fd(), path.file_name().unwrap(), key, value).unwrap();
}

fn mknod(path: &Path, kind: SFlag, major: u32, minor: u32) {
    let parent = fsutil::open_dir_path(path.parent().unwrap()).unwrap();
    fsutil::mknod_at(parent.as_fd(), path.file_name().unwrap(), kind, 0o640, fsutil::make_dev(major, minor)).unwrap();
}

fn set_mtime(path: &Path, seconds: i64) {
    let parent = fsutil::open_dir_path(path.parent().unwrap()).unwrap();
    fsutil::set_mtime_at(parent.as_fd(), path.file_name().unwrap(), seconds, 0).unwrap();
}

/// A tree with every kind of entry a layer can carry.
fn build_source_tree(src: &Path) {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let mkdir = |p: &str| std::fs::create_dir_all(src.join(p)).unwrap();
    for d in ["etc", "bin", "dev", "big", "empty"] {
        mkdir(d);
    }
    std::fs::write(src.join("etc/passwd"), b"root:x:0:0:root:/root:/bin/sh\n").unwrap();
    set_xattr(&src.join("etc/passwd"), "user.berth.test", b"hello");
    std::fs::write(src.join("bin/tool"), vec![7u8; 10_000]).unwrap();
    nix::unistd::chown(&src.join("bin/tool"), Some(1234.into()), Some(5678.into())).unwrap();
    std::fs::set_permissions(src.join("bin/tool"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    set_xattr(&src.join("bin/tool"), "trusted.berth", b"1");
    std::fs::hard_link(src.join("bin/tool"), src.join("bin/tool2")).unwrap();
    symlink("tool", src.join("bin/sh")).unwrap();
    symlink("/etc/passwd", src.join("abs-link")).unwrap();
    mknod(&src.join("dev/null"), SFlag::S_IFCHR, 1, 3);
    mknod(&src.join("dev/loop9"), SFlag::S_IFBLK, 7, 9);
    mknod(&src.join("dev/fifo"), SFlag::S_IFIFO, 0, 0);
    let sparse = std::fs::File::create(src.join("big/sparse")).unwrap();
    sparse.set_len(GIB).unwrap();
    sparse.write_all_at(b"start", 0).unwrap();
    sparse.write_all_at(b"end", GIB - 3).unwrap();
    drop(sparse);
    let deep = format!("deep/{}", "d".repeat(60));
    mkdir(&deep);
    std::fs::write(src.join(&deep).join("f".repeat(80)), b"long name").unwrap();
    set_xattr(&src.join(&deep).join("f".repeat(80)), "user.long", b"x");
    std::fs::set_permissions(src.join("empty"), std::fs::Permissions::from_mode(0o700)).unwrap();
    for p in ["etc/passwd", "bin/tool", "dev/null", "dev/fifo"] {
        set_mtime(&src.join(p), 1_600_000_000);
    }
}

fn tar_of_dir(dir: &Path) -> Vec<u8> {
    let fd = fsutil::open_dir_path(dir).unwrap();
    let mut writer = TarWriter::new(Vec::new());
    archive::write_merged(&mut writer, &[fd], false).unwrap();
    writer.finish().unwrap()
}

fn diff_of(dir: &Path) -> Vec<u8> {
    let fd = fsutil::open_dir_path(dir).unwrap();
    produce_layer(&DiffSource::Upper(fd), Output::Tar, Vec::new()).unwrap().0
}

/// The second layer: deletes, opaque directory, in-layer hard link, new symlink, device,
/// xattrs.
fn second_layer() -> Vec<u8> {
    RawTar::new()
        .dir("etc/")
        .file("etc/.wh.passwd", b"")
        .file("etc/hosts", b"127.0.0.1 localhost\n")
        .dir("bin/")
        .dir("bin/opq/")
        .file("bin/opq/.wh..wh..opq", b"")
        .file("bin/opq/new", b"only me")
        .file_owned("bin/l2", b"layer two", 0o750, 42, 43)
        .hardlink("bin/l2-link", "bin/l2")
        .symlink("bin/up", "../etc/hosts")
        .dir("dev/")
        .device("dev/zero", tar::EntryType::Char, 1, 5)
        .xattr_file("x", b"with xattrs", &[("user.a", b"1"), ("trusted.b", b"2")])
        .file(".wh.empty", b"")
        .finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_then_diff_gives_the_same_tree() {
    require_root!();
    let t = TestCore::new(Driver::Overlay);
    let src = t.dir.path().join("src");
    build_source_tree(&src);

    // Base layer: everything, gzip-compressed, streamed in chunks.
    let base = tar_of_dir(&src);
    assert!(base.len() < 1 << 20, "the sparse file must be archived sparsely ({} bytes)", base.len());
    let applied = apply_layer(&t.core, "l1", "", gzip(&base), &sha256(&base)).await.unwrap();
    assert!(!applied.already_existed);
    assert_eq!(applied.diff_id, sha256(&base));
    assert_eq!(applied.size, base.len() as i64);
    let l1 = t.fs_of("l1");
    assert_eq!(describe_tree(&l1), describe_tree(&src));

    let sparse = std::fs::metadata(l1.join("big/sparse")).unwrap();
    assert_eq!(sparse.len(), GIB);
    assert!(sparse.blocks() * 512 < 1 << 20, "applied sparse file uses {} bytes", sparse.blocks() * 512);
    let mut buf = [0u8; 5];
    std::fs::File::open(l1.join("big/sparse")).unwrap().read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"start");
    let tool = std::fs::metadata(l1.join("bin/tool")).unwrap();
    assert_eq!(tool.ino(), std::fs::metadata(l1.join("bin/tool2")).unwrap().ino(), "hard link kept");
    assert_eq!(tool.mode() & 0o7777, 0o4755, "setuid survives chown");

    // Diffing the base layer gives the layer we applied.
    assert_eq!(describe_tar(&diff_of(&l1)), describe_tar(&base));

    // Second layer on top: whiteouts and an opaque directory become overlay markers...
    let two = second_layer();
    apply_layer(&t.core, "l2", "l1", two.clone(), &sha256(&two)).await.unwrap();
    let l2 = t.fs_of("l2");
    let upper = describe_tree(&l2);
    assert_eq!(upper["etc/passwd"].kind, "whiteout");
    assert_eq!(upper["empty"].kind, "whiteout");
    assert!(upper["bin/opq"].xattrs.contains(&("trusted.overlay.opaque".to_string(), b"y".to_vec())));
    // ...and come back as `.wh.` entries: the diff is the layer we applied.
    let rediff = diff_of(&l2);
    assert_eq!(describe_tar(&rediff), describe_tar(&two));

    // Applying the re-made diff gives an identical upper directory.
    apply_layer(&t.core, "l2-again", "l1", rediff.clone(), &sha256(&rediff)).await.unwrap();
    assert_eq!(describe_tree(&t.fs_of("l2-again")), upper);

    // A read-only view of both layers, really mounted, shows the merged result.
    let mounts = t.core.prepare(&ns(), "view", "l2", Default::default(), Kind::View).await.unwrap();
    assert_eq!(mounts[0].r#type, "overlay");
    let target = t.dir.path().join("mnt");
    std::fs::create_dir(&target).unwrap();
    {
        let _guard = mount_all(&mounts, &target);
        assert!(!target.join("etc/passwd").exists(), "whiteout hides the lower file");
        assert_eq!(std::fs::read(target.join("etc/hosts")).unwrap(), b"127.0.0.1 localhost\n");
        assert!(!target.join("empty").exists());
        assert_eq!(std::fs::read(target.join("bin/tool")).unwrap(), vec![7u8; 10_000], "lower files show through");
        assert_eq!(std::fs::read_link(target.join("bin/up")).unwrap(), Path::new("../etc/hosts"));
        assert_eq!(std::fs::read(target.join("bin/up")).unwrap(), b"127.0.0.1 localhost\n");
        assert!(std::fs::write(target.join("ro-test"), b"x").is_err(), "a view is read-only");
    }
    assert!(mounted_below(t.dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_directory_hides_lower_content_when_mounted() {
    require_root!();
    let t = TestCore::new(Driver::Overlay);
    let one = RawTar::new().dir("d/").file("d/lower", b"l").dir("d/sub/").file("d/sub/x", b"x").finish();
    apply_layer(&t.core, "one", "", one.clone(), &sha256(&one)).await.unwrap();
    let two = RawTar::new().dir("d/").file("d/.wh..wh..opq", b"").file("d/upper", b"u").finish();
    apply_layer(&t.core, "two", "one", two.clone(), &sha256(&two)).await.unwrap();
    let mounts = t.core.prepare(&ns(), "rw", "two", Default::default(), Kind::Active).await.unwrap();
    let target = t.dir.path().join("mnt");
    std::fs::create_dir(&target).unwrap();
    {
        let _guard = mount_all(&mounts, &target);
        let mut names: Vec<String> = std::fs::read_dir(target.join("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["upper"]);
    }
    assert!(mounted_below(t.dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_changes_become_a_layer_and_a_change_list() {
    require_root!();
    let t = TestCore::new(Driver::Overlay);
    let base = RawTar::new().dir("etc/").file("etc/a", b"a").file("etc/b", b"b").dir("var/").dir("var/lib/").finish();
    apply_layer(&t.core, "base", "", base.clone(), &sha256(&base)).await.unwrap();
    let mounts = t.core.prepare(&ns(), "ctr", "base", Default::default(), Kind::Active).await.unwrap();
    let target = t.dir.path().join("mnt");
    std::fs::create_dir(&target).unwrap();
    {
        let _guard = mount_all(&mounts, &target);
        std::fs::write(target.join("etc/a"), b"changed").unwrap();
        std::fs::remove_file(target.join("etc/b")).unwrap();
        std::fs::create_dir(target.join("var/lib/new")).unwrap();
        std::fs::write(target.join("var/lib/new/file"), b"n").unwrap();
    }
    let changes: Vec<(String, ChangeKind)> =
        t.core.changes(&ns(), "ctr").await.unwrap().into_iter().map(|c| (c.display_path(), c.kind)).collect();
    assert_eq!(
        changes,
        [
            ("/etc".to_string(), ChangeKind::Modified),
            ("/etc/a".to_string(), ChangeKind::Modified),
            ("/etc/b".to_string(), ChangeKind::Deleted),
            ("/var".to_string(), ChangeKind::Modified),
            ("/var/lib".to_string(), ChangeKind::Modified),
            ("/var/lib/new".to_string(), ChangeKind::Added),
            ("/var/lib/new/file".to_string(), ChangeKind::Added),
        ]
    );
    let layer = diff_of(&t.fs_of("ctr"));
    let described = describe_tar(&layer);
    assert_eq!(described["etc/b"].kind, "whiteout");
    assert_eq!(described["etc/a"].detail, sha256(b"changed"));
    assert!(described.contains_key("var/lib/new/file"));

    // Committing the container and exporting a view of it gives the merged tree.
    t.core.commit(&ns(), "committed", "ctr", Default::default()).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    t.core.export(&ns(), "committed", tx).unwrap();
    let mut exported = Vec::new();
    while let Some(chunk) = rx.recv().await {
        exported.extend(chunk.unwrap());
    }
    let merged = describe_tar(&exported);
    let names: Vec<&str> = merged.keys().map(String::as_str).collect();
    assert_eq!(names, ["etc", "etc/a", "var", "var/lib", "var/lib/new", "var/lib/new/file"]);
    assert_eq!(merged["etc/a"].detail, sha256(b"changed"));
    assert!(mounted_below(t.dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_symlinks_in_lower_layers_are_followed_inside_the_root() {
    require_root!();
    // Merged-/usr images: /lib -> usr/lib in the base; a later layer writes lib/x.
    let t = TestCore::new(Driver::Overlay);
    let base = RawTar::new().dir("usr/").dir("usr/lib/").symlink("lib", "usr/lib").finish();
    apply_layer(&t.core, "base", "", base.clone(), &sha256(&base)).await.unwrap();
    let two = RawTar::new().file("lib/x", b"x").finish();
    apply_layer(&t.core, "two", "base", two.clone(), &sha256(&two)).await.unwrap();
    let upper = t.fs_of("two");
    assert_eq!(std::fs::read(upper.join("usr/lib/x")).unwrap(), b"x");
    assert!(std::fs::symlink_metadata(upper.join("lib")).is_err(), "the lower symlink was not shadowed");
    let _ = OsStr::new("");
}
