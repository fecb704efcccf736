//! `berth_common::crilog`: `parse` never panics on arbitrary lines, and `encode` /
//! `LineSplitter` output parses back to the content, stream, partial flag and time.
#![no_main]

use berth_common::crilog::{LineSplitter, Record, Stream, encode, parse};
use libfuzzer_sys::fuzz_target;

include!("../checks/crilog.rs");

fuzz_target!(|data: &[u8]| check(data));
