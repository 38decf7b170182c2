//! The `testbed.v1` contracts, generated at build time from `proto/`.
//!
//! This crate owns the wire types and nothing else: messages, the tonic
//! client and server stubs for every service, and the encoded descriptor set
//! that server reflection serves. Behaviour lives in the service crates.
//!
//! `tonic` and `prost` are re-exported so every crate in the workspace uses
//! the exact versions the generated code was built against.
//!
//! # Layout
//! - [`v1`]: package `testbed.v1` (events, ingest, worker control, query,
//!   simulator).
//! - [`google::rpc`]: the `google.rpc` status and error-detail messages, used
//!   inside acks (`PublishStreamResponse.status`) and served by reflection so
//!   that clients can decode rich error details.
//! - [`raw`]: publish requests carrying already-encoded events (wire-identical
//!   to the generated ones), the `IngestService` client and server over
//!   them, [`raw::EventRef`], an event read in place without allocating,
//!   and [`raw::EventView`], the same as a prost message (for re-encoding);
//!   `raw/event_writer.rs` encodes an event field by field (the simulator's
//!   generator), and `raw/tags.rs` is the one table of field numbers both
//!   use, checked against the descriptors in a test.
//! - [`codec`]: the servers' codec (an undecodable request is
//!   INVALID_ARGUMENT, not prost's INTERNAL).
//! - [`FILE_DESCRIPTOR_SET`]: every file above plus the well-known types they
//!   import, with source info (comments) kept.
#![forbid(unsafe_code)]

pub use prost;
pub use prost_types;
pub use tonic;

/// Package `testbed`: module nesting follows the protobuf packages, which
/// the generated code relies on for cross-package paths.
pub mod testbed {
    /// Package `testbed.v1`: the public API of the testbed.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/testbed.v1.rs"));
        // The clients, generated apart (prost's codec; `codec`).
        include!(concat!(env!("OUT_DIR"), "/client/testbed.v1.rs"));
    }
}

pub use testbed::v1;

pub mod codec;
pub mod raw;

/// The `google.rpc` messages (status and error details).
pub mod google {
    /// Package `google.rpc`.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

/// Encoded `google.protobuf.FileDescriptorSet` of every file under `proto/`
/// and their imports, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/testbed_descriptor.bin"));

/// Full names of the gRPC services in this package, as health and reflection
/// report them.
pub mod service_names {
    /// `testbed.v1.IngestService`.
    pub const INGEST: &str = "testbed.v1.IngestService";
    /// `testbed.v1.WorkerControlService`.
    pub const WORKER_CONTROL: &str = "testbed.v1.WorkerControlService";
    /// `testbed.v1.QueryService`.
    pub const QUERY: &str = "testbed.v1.QueryService";
    /// `testbed.v1.SimulatorService`.
    pub const SIMULATOR: &str = "testbed.v1.SimulatorService";
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    /// The embedded descriptor set decodes and holds every service with its comments.
    #[test]
    fn descriptor_set_has_services_and_comments() {
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<String> = fds
            .file
            .iter()
            .flat_map(|f| {
                f.service
                    .iter()
                    .map(move |s| format!("{}.{}", f.package(), s.name()))
            })
            .collect();
        for name in [
            service_names::INGEST,
            service_names::WORKER_CONTROL,
            service_names::QUERY,
            service_names::SIMULATOR,
        ] {
            assert!(
                services.iter().any(|s| s == name),
                "{name} missing: {services:?}"
            );
        }
        let files: Vec<&str> = fds.file.iter().map(|f| f.name()).collect();
        assert!(
            files.contains(&"google/rpc/error_details.proto"),
            "{files:?}"
        );
        assert!(
            files.contains(&"google/protobuf/timestamp.proto"),
            "{files:?}"
        );
        let event = fds
            .file
            .iter()
            .find(|f| f.name() == "testbed/v1/event.proto")
            .unwrap();
        let has_comments = event
            .source_code_info
            .as_ref()
            .is_some_and(|info| info.location.iter().any(|l| l.leading_comments.is_some()));
        assert!(
            has_comments,
            "source info (comments) must be kept for describe"
        );
    }
}
