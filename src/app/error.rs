//! Why the agent cannot run: the error of `run` and of its assembly, each a line.

use crate::meta::MetaError;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why the agent cannot run.
#[derive(Debug)]
pub enum AppError {
    Meta(MetaError),
    NoServers,
    Io { what: String, err: io::Error },
    Locked(PathBuf),
    Unsafe(String),
    Tls(String),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Meta(err) => err.fmt(f),
            AppError::NoServers => f.write_str(
                "no server address: none compiled in (BOOT_SERVER_ADDR), none given with -S \
                 on the first start, none from a server",
            ),
            AppError::Io { what, err } => write!(f, "{what}: {err}"),
            AppError::Unsafe(why) => f.write_str(why),
            AppError::Tls(why) => write!(f, "TLS: {why}"),
            AppError::Locked(dir) => write!(
                f,
                "another bootagent is running with data directory {}",
                dir.display()
            ),
        }
    }
}

impl std::error::Error for AppError {}

impl From<MetaError> for AppError {
    fn from(err: MetaError) -> Self {
        AppError::Meta(err)
    }
}
