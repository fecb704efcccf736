//! Snapshot lifecycle against a real directory tree: concurrent Apply of one layer,
//! refusing to remove parents, Cleanup of interrupted work, long chains, and the native
//! snapshotter's complete-tree semantics.

mod common;

use berth_snapshots::changes::ChangeKind;
use berth_snapshots::diff::{DiffSource, Output, produce_layer};
use berth_snapshots::driver::Driver;
use berth_snapshots::fsutil;
use berth_snapshots::store::Kind;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_applies_of_one_layer_unpack_once() {
    require_root!();
    let t = TestCore::new(Driver::Overlay);
    let mut tar = RawTar::new();
    for i in 0..2000 {
        tar.file(&format!("f{i}"), &vec![b'x'; 4096]);
    }
    let layer = gzip(&tar.finish());
    let diff_id = {
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&layer[..]), &mut raw).unwrap();
        sha256(&raw)
    };
    let (a, b) = tokio::join!(
        apply_layer(&t.core, "same", "", layer.clone(), &diff_id),
        apply_layer(&t.core, "same", "", layer.clone(), &diff_id)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!([a.already_existed, b.already_existed].iter().filter(|x| **x).count(), 1, "{a:?} {b:?}");
    assert_eq!(a.diff_id, b.diff_id);
    assert_eq!(a.size, b.size);
    assert_eq!(t.snapshot_dirs().len(), 1, "unpacked once: {:?}", t.snapshot_dirs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parents_cannot_be_removed_and_cleanup_removes_leftovers() {
    require_root!();
    let t = TestCore::new(Driver::Overlay);
    let layer = RawTar::new().file("a", b"a").finish();
    apply_layer(&t.core, "base", "", layer.clone(), &sha256(&layer)).await.unwrap();
    t.core.prepare(&ns(), "child", "base", Default::default(), Kind::Active).await.unwrap();
    let status: tonic::Status = t.core.remove(&ns(), "base").await.unwrap_err().into();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("child"), "{}", status.message());
    let status: tonic::Status =
        t.core.prepare(&ns(), "child", "base", Default::default(), Kind::Active).await.unwrap_err().into();
    assert_eq!(status.code(), tonic::Code::AlreadyExists);
    let status: tonic::Status =
        t.core.prepare(&ns(), "x", "child", Default::default(), Kind::Active).await.unwrap_err().into();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "active parents are refused");

    // What a crash mid-Apply leaves: a numbered directory no record points to.
    std::fs::create_dir_all(t.root().join("999/fs/etc")).unwrap();
    std::fs::write(t.root().join("999/fs/etc/x"), vec![1u8; 8192]).unwrap();
    let (removed, bytes) = t.core.cleanup().await.unwrap();
    assert_eq!(removed, 1);
    assert!(bytes >= 8192);
    assert!(!t.root().join("999").exists());
    assert_eq!(t.snapshot_dirs().len(), 2, "live snapshots stay");

    t.core.remove(&ns(), "child").await.unwrap();
    t.core.remove(&ns(), "base").await.unwrap();
    assert!(t.snapshot_dirs().is_empty());
    let status: tonic::Status = t.core.remove(&ns(), "base").await.unwrap_err().into();
    assert_eq!(status.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_layers_is_a_clear_error_not_einval() {
    require_root!();
    let t = TestCore::new(Driver::Overlay);
    let mut parent = String::new();
    for i in 0..130 {
        let layer = RawTar::new().file(&format!("f{i}"), b"x").finish();
        let name = format!("layer-{i}");
        apply_layer(&t.core, &name, &parent, layer.clone(), &sha256(&layer)).await.unwrap();
        parent = name;
    }
    let err: tonic::Status =
        t.core.prepare(&ns(), "top", &parent, Default::default(), Kind::Active).await.unwrap_err().into();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("too many layers"), "{}", err.message());
    assert!(t.core.store.get(&ns(), "top").unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_snapshots_hold_complete_trees() {
    require_root!();
    let t = TestCore::new(Driver::Native);
    let one = RawTar::new().dir("d/").file("d/old", b"o").file("keep", b"k").file("gone", b"g").finish();
    apply_layer(&t.core, "one", "", one.clone(), &sha256(&one)).await.unwrap();
    let two = RawTar::new().file(".wh.gone", b"").dir("d/").file("d/.wh..wh..opq", b"").file("d/new", b"n").finish();
    apply_layer(&t.core, "two", "one", two.clone(), &sha256(&two)).await.unwrap();
    let tree = describe_tree(&t.fs_of("two"));
    let names: Vec<&str> = tree.keys().map(String::as_str).collect();
    assert_eq!(names, ["d", "d/new", "keep"]);

    let mounts = t.core.prepare(&ns(), "rw", "two", Default::default(), Kind::Active).await.unwrap();
    assert_eq!((mounts[0].r#type.as_str(), mounts[0].options[1].as_str()), ("bind", "rw"));
    let fs = t.fs_of("rw");
    std::fs::write(fs.join("added"), b"a").unwrap();
    std::fs::remove_file(fs.join("keep")).unwrap();
    let changes: Vec<(String, ChangeKind)> =
        t.core.changes(&ns(), "rw").await.unwrap().into_iter().map(|c| (c.display_path(), c.kind)).collect();
    assert_eq!(changes, [("/added".to_string(), ChangeKind::Added), ("/keep".to_string(), ChangeKind::Deleted)]);
    let new = fsutil::open_dir_path(&fs).unwrap();
    let old = fsutil::open_dir_path(&t.fs_of("two")).unwrap();
    let (layer, _) = produce_layer(&DiffSource::Trees { new, old: Some(old) }, Output::Tar, Vec::new()).unwrap();
    let described = describe_tar(&layer);
    let names: Vec<&str> = described.keys().map(String::as_str).collect();
    assert_eq!(names, ["added", "keep"]);
    assert_eq!(described["keep"].kind, "whiteout");
}
