//! Typed errors of the domain. Every variant names the file it is about and, where
//! there is one, what the user can do; `anyhow` is used only at the CLI edge.

use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}:{line}: {message}")]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },

    #[error("{path}: not a directory; pass the directory a system is mounted on with --root")]
    BadRoot { path: PathBuf },

    #[error("{path}: {message}")]
    Refused { path: PathBuf, message: String },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn malformed(
        path: impl Into<PathBuf>,
        line: usize,
        message: impl Into<String>,
    ) -> Error {
        Error::Malformed {
            path: path.into(),
            line,
            message: message.into(),
        }
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
