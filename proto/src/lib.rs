//! The wire: etcd's v3 protos, so etcd clients talk to cairn unmodified, and
//! cairn's internal `cairn.*.v1` protos between its services.

mod codec;
pub mod contract;
pub mod etcd_error;

/// etcd's key-value data types (`mvccpb`).
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// etcd's auth data types (`authpb`).
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod authpb {
    tonic::include_proto!("authpb");
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// etcd's v3 gRPC API (`etcdserverpb`): the KV, Watch, Lease, Cluster,
/// Maintenance and Auth services.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// etcd's lock service (`v3lockpb`), served by the edge over KV and leases.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

/// etcd's election service (`v3electionpb`), served by the edge over KV,
/// leases and watches.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}

/// cairn's internal APIs.
pub mod cairn {
    /// What every cairn service shares on the wire: typed failures.
    #[allow(clippy::all, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("cairn.v1");
    }

    /// The replicated log.
    pub mod log {
        /// Version 1 of the log API.
        #[allow(clippy::all, missing_docs)]
        pub mod v1 {
            tonic::include_proto!("cairn.log.v1");
        }
    }

    /// The KV replicas: history for the watch gateways, and the log commands.
    pub mod mvcc {
        /// Version 1 of the mvcc API.
        #[allow(clippy::all, missing_docs)]
        pub mod v1 {
            tonic::include_proto!("cairn.mvcc.v1");
        }
    }
}
