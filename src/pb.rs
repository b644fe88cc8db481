//! Generated protobuf and gRPC code. Nothing outside `grpc` uses these types: handlers convert at the edge.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// `otp.v1`.
pub mod otp {
    /// Version 1 of the API.
    pub mod v1 {
        tonic::include_proto!("otp.v1");
    }
}

/// The encoded descriptor set of every proto file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/otp_descriptor.bin"));
