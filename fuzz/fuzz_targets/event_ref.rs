//! `EventRef`, the in-place event decoder every event passes through
//! (ingest validates with it, the worker folds with it): on any bytes no
//! panic, and whatever prost accepts it reads field for field as prost
//! does (`testbed_proto::raw::agree`, the rule the property tests hold it
//! to as well).
#![no_main]

use libfuzzer_sys::fuzz_target;
use testbed_proto::raw::agree;

fuzz_target!(|bytes: &[u8]| {
    if let Some(why) = agree::disagreement(bytes) {
        panic!("EventRef disagrees with prost: {why}");
    }
});
