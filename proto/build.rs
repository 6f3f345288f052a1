//! Compiles the protos with protox, so no system `protoc` is needed.

use std::path::Path;

/// etcd's wire protos: package names, field numbers and service paths as etcd has
/// them, so that unmodified etcd clients interoperate. Default codec, like etcd.
const ETCD_PROTOS: &[&str] = &[
    "authpb/auth.proto",
    "mvccpb/kv.proto",
    "etcdserverpb/rpc.proto",
];

/// cairn's internal protos. Their servers answer a body that does not decode with
/// INVALID_ARGUMENT rather than tonic's INTERNAL.
const CAIRN_PROTOS: &[&str] = &["cairn/log/v1/log.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let etcd_present: Vec<&str> = ETCD_PROTOS
        .iter()
        .copied()
        .filter(|file| Path::new("etcd").join(file).is_file())
        .collect();
    if !etcd_present.is_empty() {
        let etcd = protox::compile(&etcd_present, ["etcd"])?;
        tonic_build::configure().compile_fds(etcd)?;
    }

    let cairn = protox::compile(CAIRN_PROTOS, ["."])?;
    tonic_build::configure()
        .codec_path("crate::codec::StrictCodec")
        .compile_fds(cairn)?;

    println!("cargo:rerun-if-changed=etcd");
    println!("cargo:rerun-if-changed=cairn");
    Ok(())
}
