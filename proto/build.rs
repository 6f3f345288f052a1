//! Compiles the protos with protox, so no system `protoc` is needed.

use std::path::Path;

/// etcd's wire protos: package names, field numbers and service paths as etcd has
/// them, so that unmodified etcd clients interoperate. Default codec, like etcd.
const ETCD_PROTOS: &[&str] = &[
    "authpb/auth.proto",
    "mvccpb/kv.proto",
    "etcdserverpb/rpc.proto",
    "v3lockpb/v3lock.proto",
    "v3electionpb/v3election.proto",
];

/// The packages the HTTP gateway speaks as JSON: etcd's mapping of proto names,
/// 64-bit integers as strings, bytes as base64 and enums by name.
const JSON_PACKAGES: &[&str] = &[
    ".authpb",
    ".mvccpb",
    ".etcdserverpb",
    ".v3lockpb",
    ".v3electionpb",
];

/// cairn's internal protos. Their servers answer a body that does not decode with
/// INVALID_ARGUMENT rather than tonic's INTERNAL.
const CAIRN_PROTOS: &[&str] = &[
    "cairn/v1/failure.proto",
    "cairn/log/v1/log.proto",
    "cairn/mvcc/v1/mvcc.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let etcd_present: Vec<&str> = ETCD_PROTOS
        .iter()
        .copied()
        .filter(|file| Path::new("etcd").join(file).is_file())
        .collect();
    if !etcd_present.is_empty() {
        let etcd = protox::compile(&etcd_present, ["etcd"])?;
        let descriptors = prost::Message::encode_to_vec(&etcd);
        tonic_prost_build::configure().compile_fds(etcd)?;
        pbjson_build::Builder::new()
            .register_descriptors(&descriptors)?
            // etcd's gateway writes the names as the .proto spells them and
            // ignores fields it does not know; both spellings are read.
            .preserve_proto_field_names()
            .ignore_unknown_fields()
            .build(JSON_PACKAGES)?;
    }

    // The cairn protos import etcd's types, which are generated once above and
    // referred to by path. prost generates every file it is given, imports
    // included, so this pass writes into a folder of its own and only cairn's
    // files are taken from it.
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let scratch = out_dir.join("cairn-pass");
    std::fs::create_dir_all(&scratch)?;
    let cairn = protox::compile(CAIRN_PROTOS, [".", "etcd"])?;
    tonic_prost_build::configure()
        .out_dir(&scratch)
        // Shared, not copied: a committed entry's commands go to every
        // subscriber, and a replica decodes them in place.
        .bytes(".cairn.log.v1.Entry.commands")
        .bytes(".cairn.mvcc.v1.KvCall.body")
        .bytes(".cairn.mvcc.v1.KvAnswer.body")
        .codec_path("crate::codec::StrictCodec")
        .extern_path(".etcdserverpb", "crate::etcdserverpb")
        .extern_path(".mvccpb", "crate::mvccpb")
        .extern_path(".authpb", "crate::authpb")
        .compile_fds(cairn)?;
    for entry in std::fs::read_dir(&scratch)? {
        let path = entry?.path();
        let is_cairn = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with("cairn."));
        if is_cairn {
            if let Some(name) = path.file_name() {
                std::fs::copy(&path, out_dir.join(name))?;
            }
        }
    }

    println!("cargo:rerun-if-changed=etcd");
    println!("cargo:rerun-if-changed=cairn");
    Ok(())
}
