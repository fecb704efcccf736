//! Hostile layers: nothing may land outside the snapshot root, the layer is refused with
//! InvalidArgument where it cannot be applied safely, and a refused layer leaves no
//! snapshot and no directory behind.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_snapshots::driver::Driver;
use common::*;

/// Everything below `dir`, with sizes and link counts, to prove it did not change.
fn snapshot_of(dir: &Path) -> BTreeMap<PathBuf, (u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, (u64, u64)>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            out.insert(entry.path(), (meta.len(), meta.nlink()));
            if meta.is_dir() {
                walk(&entry.path(), out);
            }
        }
    }
    walk(dir, &mut out);
    out
}

fn shadow_state() -> (Vec<u8>, u64) {
    use std::os::unix::fs::MetadataExt;
    let data = std::fs::read("/etc/shadow").unwrap_or_default();
    let links = std::fs::metadata("/etc/shadow").map(|m| m.nlink()).unwrap_or(0);
    (data, links)
}

struct Case {
    name: &'static str,
    tar: Vec<u8>,
    /// Whether the layer must be refused (else: it may apply, but confined).
    refused: bool,
}

/// `outside` is an absolute directory next to the snapshot root that must stay untouched.
fn cases(outside: &str) -> Vec<Case> {
    let abs_link_target = outside.to_string();
    vec![
        Case { name: "dot-dot path", tar: RawTar::new().file("../escape", b"x").finish(), refused: true },
        Case {
            name: "dot-dot in the middle",
            tar: RawTar::new().dir("a/").file("a/../../escape", b"x").finish(),
            refused: true,
        },
        Case {
            name: "absolute path is confined",
            tar: RawTar::new().file(&format!("{outside}/abs"), b"x").finish(),
            refused: false,
        },
        Case {
            name: "absolute symlink then write through it",
            tar: RawTar::new().symlink("evil", &abs_link_target).file("evil/pwned", b"x").finish(),
            refused: true,
        },
        Case {
            name: "relative symlink climbing out then write through it",
            tar: RawTar::new().symlink("evil", "../../../../../../../../tmp").file("evil/pwned", b"x").finish(),
            refused: true,
        },
        Case {
            name: "symlink to a directory named like outside, created inside: confined",
            tar: RawTar::new()
                .dir(&format!("{}/", outside.trim_start_matches('/')))
                .symlink("evil", outside)
                .file("evil/confined", b"x")
                .finish(),
            refused: false,
        },
        Case {
            name: "hard link to /etc/shadow",
            tar: RawTar::new().hardlink("shadow", "/etc/shadow").finish(),
            refused: true,
        },
        Case {
            name: "hard link climbing to /etc/shadow",
            tar: RawTar::new().hardlink("shadow", "../../../../../../etc/shadow").finish(),
            refused: true,
        },
        Case {
            name: "hard link through a symlink to outside",
            tar: RawTar::new().symlink("etc", "/etc").hardlink("shadow", "etc/shadow").finish(),
            refused: true,
        },
        Case {
            name: "hard link to a symlink pointing outside, then overwrite it",
            tar: RawTar::new()
                .symlink("s", "/etc/shadow")
                .hardlink("h", "s")
                .file("h", b"overwritten")
                .file("s", b"overwritten")
                .finish(),
            refused: false,
        },
        Case {
            name: "symlink loop",
            tar: RawTar::new().symlink("a", "b").symlink("b", "a").file("a/x", b"x").finish(),
            refused: true,
        },
        Case {
            name: "self loop",
            tar: RawTar::new().symlink("loop", "loop/x").file("loop/y", b"x").finish(),
            refused: true,
        },
        Case {
            name: "dot-dot in a symlink target chain",
            tar: RawTar::new()
                .dir("a/")
                .dir("a/b/")
                .symlink("a/b/up", "../../../../..")
                .file("a/b/up/escape", b"x")
                .finish(),
            refused: false, // resolves to the root itself: confined
        },
        Case {
            name: "directory replaced by a symlink, then written through",
            tar: RawTar::new().dir("d/").file("d/f", b"1").symlink("d", outside).file("d/g", b"x").finish(),
            refused: true,
        },
        Case {
            name: "device nodes land inside only",
            tar: RawTar::new()
                .dir("dev/")
                .device("dev/sda", tar::EntryType::Block, 8, 0)
                .device("dev/mem", tar::EntryType::Char, 1, 1)
                .finish(),
            refused: false,
        },
        Case {
            name: "device node at a traversal path",
            tar: RawTar::new().device("../../dev/evil", tar::EntryType::Char, 1, 1).finish(),
            refused: true,
        },
        Case { name: "whiteout climbing out", tar: RawTar::new().file("../.wh.victim", b"").finish(), refused: true },
        Case {
            name: "whiteout through a symlink to outside",
            tar: RawTar::new().symlink("evil", outside).file("evil/.wh.victim", b"").finish(),
            refused: true,
        },
        Case {
            name: "opaque marker through a symlink to outside",
            tar: RawTar::new().symlink("evil", outside).file("evil/.wh..wh..opq", b"").finish(),
            refused: true,
        },
        Case {
            name: "final-component symlink is replaced, not written through",
            tar: RawTar::new().symlink("target", &format!("{outside}/victim")).file("target", b"x").finish(),
            refused: false,
        },
    ]
}

async fn run_suite(driver: Driver) {
    let t = TestCore::new(driver);
    // A directory outside the snapshot root with a file a layer would love to reach.
    let outside = t.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"precious").unwrap();
    let outside_str = outside.display().to_string();
    // A committed base so the suite also runs over lower layers.
    let base = RawTar::new().dir("lower/").file("lower/file", b"l").finish();
    apply_layer(&t.core, "base", "", base.clone(), &sha256(&base)).await.unwrap();

    let before_outside = snapshot_of(&outside);
    let before_shadow = shadow_state();
    let before_tmp: Vec<String> =
        std::fs::read_dir("/tmp").unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();

    for (index, case) in cases(&outside_str).into_iter().enumerate() {
        let name = format!("hostile-{index}");
        let dirs_before = t.snapshot_dirs();
        let result = apply_layer(&t.core, &name, "base", case.tar.clone(), &sha256(&case.tar)).await;
        if case.refused {
            let Err(err) = result else { panic!("{}: expected refusal, got success", case.name) };
            // Mapped through the one From<Error> for Status, it is InvalidArgument.
            let status: tonic::Status = err.into();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{}: {}", case.name, status.message());
            assert!(t.core.store.get(&ns(), &name).unwrap().is_none(), "{}: no snapshot after refusal", case.name);
            assert_eq!(t.snapshot_dirs(), dirs_before, "{}: no directory left behind", case.name);
        } else {
            result.unwrap_or_else(|e| panic!("{}: expected confinement, got {e}", case.name));
        }
        assert_eq!(snapshot_of(&outside), before_outside, "{}: wrote outside the root", case.name);
        assert_eq!(shadow_state(), before_shadow, "{}: touched /etc/shadow", case.name);
    }
    let after_tmp: Vec<String> =
        std::fs::read_dir("/tmp").unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    for name in &after_tmp {
        assert!(before_tmp.contains(name) || !name.contains("pwned") && name != "escape", "new /tmp entry {name}");
    }
    assert!(!Path::new("/tmp/pwned").exists() && !Path::new("/escape").exists());

    // The confined cases really landed inside their snapshot.
    let abs = t.fs_of("hostile-2").join(outside_str.trim_start_matches('/')).join("abs");
    let via_link = t.fs_of("hostile-5").join(outside_str.trim_start_matches('/')).join("confined");
    assert!(abs.exists(), "{}", abs.display());
    assert!(via_link.exists(), "{}", via_link.display());
    assert_eq!(std::fs::read(t.fs_of("hostile-9").join("h")).unwrap(), b"overwritten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_layers_overlay() {
    require_root!();
    run_suite(Driver::Overlay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_layers_native() {
    require_root!();
    run_suite(Driver::Native).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_diff_id_and_corrupt_streams_leave_nothing() {
    require_root!();
    let t = TestCore::new(Driver::Overlay);
    let layer = RawTar::new().file("a", b"a").finish();
    let err: tonic::Status =
        apply_layer(&t.core, "bad", "", gzip(&layer), &sha256(b"something else")).await.unwrap_err().into();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("diff_id"), "{}", err.message());
    let mut truncated = gzip(&layer);
    truncated.truncate(truncated.len() / 2);
    let err: tonic::Status = apply_layer(&t.core, "bad", "", truncated, &sha256(&layer)).await.unwrap_err().into();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{}", err.message());
    assert!(t.snapshot_dirs().is_empty(), "{:?}", t.snapshot_dirs());
    assert!(t.core.list(&ns(), &[]).unwrap().is_empty());
}
