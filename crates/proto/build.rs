//! Compiles every `.proto` file under the workspace's `proto/` folder with
//! `protox` (a pure-Rust protobuf compiler, so no system `protoc` is needed),
//! writes the encoded `FileDescriptorSet` to `OUT_DIR` for server reflection,
//! and feeds the same descriptors to tonic's code generator.

use std::path::{Path, PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto").canonicalize()?;
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let mut files = Vec::new();
    collect_protos(&proto_root, &mut files)?;
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    // `compile` keeps imports (the well-known types) and source info: the
    // comments in the .proto files are what `grpcurl describe` shows users.
    let fds = protox::compile(&files, [&proto_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("testbed_descriptor.bin"), fds.encode_to_vec())?;

    // Messages and servers: the servers decode requests with
    // `codec::ServerCodec` (an undecodable request is the client's mistake,
    // INVALID_ARGUMENT, not prost's INTERNAL).
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .codec_path("crate::codec::ServerCodec")
        .compile_fds(fds.clone())?;
    // Clients apart, with prost's codec (a response that does not decode
    // is the server's fault: INTERNAL), over the messages generated above.
    let client_dir = out_dir.join("client");
    std::fs::create_dir_all(&client_dir)?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .out_dir(&client_dir)
        .extern_path(".testbed.v1", "crate::v1")
        .extern_path(".google.rpc", "crate::google::rpc")
        .compile_fds(fds)?;

    // IngestService once more, over requests whose events stay encoded
    // (`src/raw.rs`): same service and method names, other message types.
    let raw_dir = out_dir.join("raw");
    std::fs::create_dir_all(&raw_dir)?;
    // Servers with `codec::ServerCodec`, clients with prost's, as above.
    tonic_build::manual::Builder::new()
        .build_client(false)
        .out_dir(&raw_dir)
        .compile(&[raw_ingest("crate::codec::ServerCodec")]);
    let raw_client_dir = raw_dir.join("client");
    std::fs::create_dir_all(&raw_client_dir)?;
    tonic_build::manual::Builder::new()
        .build_server(false)
        .out_dir(&raw_client_dir)
        .compile(&[raw_ingest("tonic_prost::ProstCodec")]);
    Ok(())
}

/// `testbed.v1.IngestService` over the raw requests, decoded with `codec`.
fn raw_ingest(codec: &str) -> tonic_build::manual::Service {
    let method = |name: &str, route: &str, input: &str, output: &str| {
        tonic_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type(input)
            .output_type(output)
            .codec_path(codec)
    };
    tonic_build::manual::Service::builder()
        .name("IngestService")
        .package("testbed.v1")
        .method(
            method(
                "publish",
                "Publish",
                "crate::raw::RawPublishRequest",
                "crate::v1::PublishResponse",
            )
            .build(),
        )
        .method(
            method(
                "publish_stream",
                "PublishStream",
                "crate::raw::RawPublishStreamRequest",
                "crate::v1::PublishStreamResponse",
            )
            .client_streaming()
            .server_streaming()
            .build(),
        )
        .build()
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
