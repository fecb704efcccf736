//! `berth_snapshots::unpack::Unpacker`: arbitrary bytes applied as a layer tar into a
//! fresh temp root never panic and never change anything outside the root.
#![no_main]

use berth_snapshots::fsutil::open_dir_path;
use berth_snapshots::tree::{Layout, Tree};
use berth_snapshots::unpack::Unpacker;
use libfuzzer_sys::fuzz_target;

include!("../checks/layer_tar.rs");

fuzz_target!(|data: &[u8]| check(data));
