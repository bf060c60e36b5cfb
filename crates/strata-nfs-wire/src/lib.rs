//! The wire layer of Strata's NFS gateway: ONC RPC record marking and call headers, and the
//! decoding of NFSv3, MOUNT and portmapper arguments. Everything here reads bytes from the
//! network, so nothing allocates more than what arrived and every length is checked against its
//! protocol maximum; it has no other dependencies, so it is quick to fuzz.

pub mod args;
pub mod rpc;
pub mod xdr;

pub use args::{MountCall, NfsCall, PortmapCall, Sattr, SetTime3, decode_mount, decode_nfs, decode_portmap};
pub use rpc::{Call, UnixCred};
pub use xdr::{Decoder, XdrError};
