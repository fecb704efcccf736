//! The API snapshot: a text dump of every Berth proto's descriptor, committed as
//! `proto/api-snapshot.txt`. Any change to the protos changes the dump, so API changes
//! are visible in review (as containerd's `api/next.pb.txt`). After an intended change,
//! regenerate with `UPDATE_API_SNAPSHOT=1 cargo test -p berth-proto --test api_snapshot`.

use prost_reflect::{DescriptorPool, ReflectMessage};

const SNAPSHOT_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/api-snapshot.txt");

fn render_snapshot() -> String {
    let pool = DescriptorPool::decode(berth_proto::FILE_DESCRIPTOR_SET).expect("our own descriptor set decodes");
    let format = prost_reflect::text_format::FormatOptions::new().pretty(true);
    let mut out = String::new();
    for file in pool.files().filter(|f| f.name().starts_with("berth/")) {
        let proto = file.file_descriptor_proto().transcode_to_dynamic();
        out.push_str(&format!("# file: {}\n", file.name()));
        out.push_str(&proto.to_text_format_with_options(&format));
        out.push_str("\n\n");
    }
    out
}

#[test]
fn api_matches_committed_snapshot() {
    let current = render_snapshot();
    if std::env::var_os("UPDATE_API_SNAPSHOT").is_some() {
        std::fs::write(SNAPSHOT_PATH, &current).expect("writing the API snapshot");
        return;
    }
    let committed = std::fs::read_to_string(SNAPSHOT_PATH).unwrap_or_default();
    if committed != current {
        let first_difference = committed
            .lines()
            .zip(current.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(current.lines().count()));
        panic!(
            "the protos changed but proto/api-snapshot.txt was not updated (first difference at line {}).\n\
             Review the API change, then run: UPDATE_API_SNAPSHOT=1 cargo test -p berth-proto --test api_snapshot",
            first_difference + 1
        );
    }
}

#[test]
fn snapshot_covers_every_service() {
    let snapshot = render_snapshot();
    for package in [
        "berth.system.v1",
        "berth.content.v1",
        "berth.images.v1",
        "berth.snapshots.v1",
        "berth.events.v1",
        "berth.containers.v1",
        "berth.tasks.v1",
        "berth.shim.v1",
    ] {
        assert!(snapshot.contains(&format!("package: \"{package}\"")), "{package} missing from the API snapshot");
    }
}
