//! An S3-compatible gateway over Strata volumes: a bucket is a volume, an object key is a path
//! in it ("a/b/c.txt" is file c.txt in directories a/b), and every request goes through the
//! same client file system (`strata-vfs`) as FUSE mounts, acting with the rights of the Strata
//! token whose key pair signed it (access key id: the token's public id; secret: the token).

pub mod attach;
pub mod auth;
pub mod checksum;
pub mod conditions;
pub mod error;
pub mod gateway;
pub mod keys;
pub mod list;
pub mod meta;
pub mod metrics;
pub mod multipart;
pub mod objects;
pub mod serve;

pub use attach::{Attachments, ServerConfig};
pub use auth::{Keyring, Token, public_id};
pub use error::GatewayError;
pub use gateway::{Gateway, Limits};
pub use serve::{serve, service};
