//! `berth_images::reference`: parsing arbitrary text never panics, and a parsed
//! reference's normalized forms parse back to the same reference.
#![no_main]

use berth_images::reference::{DOCKER_HUB, ImageRef, familiar, split_name};
use libfuzzer_sys::fuzz_target;

include!("../checks/image_ref.rs");

fuzz_target!(|data: &[u8]| check(data));
