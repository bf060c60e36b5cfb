//! Test harness for the integration tests on real processes: `strata server`, `strata mount`
//! and the gateways, each a separate process with its own log, all started through one
//! launcher and torn down with the test, which fails if any of their logs holds an `ERROR` or
//! `WARN` line it did not allow.
//!
//! - `procs`: running commands, the launcher ([`Service`]), ports, signals, logs, mounts.
//! - `cluster`: a server, a volume and its mounts ([`Cluster`]), the CLI and token helpers.
//! - `csi`: the Kubernetes CSI driver of a cluster ([`CsiDriver`]) and gRPC clients of it.
//! - `gateways`: NFS and S3 gateways of a cluster ([`Gateway`]).
//! - `services`: which PostgreSQL and S3 the tests use, and private ones a test can stop.
//! - `files`: test data, reads and synced writes, errnos, other users and processes.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod csi;
pub mod files;
pub mod gateways;
pub mod procs;
pub mod services;

pub use cluster::*;
pub use files::*;
pub use gateways::*;
pub use procs::*;
