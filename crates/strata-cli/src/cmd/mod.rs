//! One module per subcommand, and the REST client the control-plane commands share.

pub mod csi;
pub mod datavolume;
pub mod dump;
pub mod fsck;
pub mod gateway;
pub mod gateway_nfs;
pub mod gateway_s3;
pub mod import;
pub mod inspect;
pub mod mount;
pub mod policy;
pub mod rest;
pub mod scope;
pub mod server;
pub mod snapshot;
pub mod stats;
pub mod status;
pub mod storageclass;
pub mod token;
pub mod up;
pub mod volume;
pub mod warmup;
