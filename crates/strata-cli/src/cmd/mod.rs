//! One module per subcommand.

pub mod mount;
pub mod server;
pub mod status;
pub mod up;
pub mod volume;
