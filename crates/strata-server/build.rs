//! Compiles the protocol definitions in `proto/` with protox (a pure-Rust protobuf
//! compiler), so building strata needs no `protoc` on the machine.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "event_store/client/shared.proto",
    "event_store/client/streams.proto",
    "event_store/client/persistent.proto",
    "event_store/client/gossip.proto",
    "event_store/client/serverfeatures.proto",
    "event_store/client/users.proto",
    "google/rpc/code.proto",
    "google/rpc/status.proto",
    "kurrentdb/protocol/v2/streams.proto",
    "kurrentdb/protocol/v2/errors.proto",
    "kurrentdb/protocol/v2/rpc_errors.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    let descriptors = protox::compile(PROTOS, [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
