//! A publish request as ingest decodes it (`RawPublishRequest`: the
//! envelope, its events left encoded), then each event through `EventRef`
//! and the prost agreement rule: no panic on any bytes, and a request
//! prost reads as `PublishRequest` has the same events in the same order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use testbed_proto::prost::Message as _;
use testbed_proto::raw::{RawPublishRequest, agree};
use testbed_proto::v1::PublishRequest;

fuzz_target!(|bytes: &[u8]| {
    let Ok(raw) = RawPublishRequest::decode(bytes) else {
        return;
    };
    for event in &raw.events {
        if let Some(why) = agree::disagreement(event) {
            panic!("EventRef disagrees with prost: {why}");
        }
    }
    if let Ok(request) = PublishRequest::decode(bytes) {
        assert_eq!(
            request.events.len(),
            raw.events.len(),
            "event counts differ"
        );
        assert_eq!(request.producer_id, raw.producer_id);
        assert_eq!(request.sequence, raw.sequence);
    }
});
