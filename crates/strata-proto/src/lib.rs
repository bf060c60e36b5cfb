//! Strata's wire protocol: generated gRPC types and the errno convention for errors.

#![allow(missing_docs, clippy::all)]

/// Generated messages and services.
pub mod pb {
    tonic::include_proto!("strata.v1");
}

pub use pb::*;

pub mod conv;
pub mod wire;

/// Response metadata key marking a session the server does not know (the client re-registers).
pub const SESSION_KEY: &str = "x-strata-session";

/// Response metadata key holding the POSIX errno of a failed call.
pub const ERRNO_KEY: &str = "x-errno";

/// A status carrying an errno for the client to map back.
pub fn errno_status(code: tonic::Code, errno: i32, msg: impl Into<String>) -> tonic::Status {
    let mut s = tonic::Status::new(code, msg);
    if let Ok(v) = errno.to_string().parse() {
        s.metadata_mut().insert(ERRNO_KEY, v);
    }
    s
}

/// The errno a status carries, if any.
pub fn status_errno(s: &tonic::Status) -> Option<i32> {
    s.metadata().get(ERRNO_KEY)?.to_str().ok()?.parse().ok()
}
