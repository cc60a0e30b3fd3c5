//! File digests. dpkg's md5sums judge with MD5, kfd-audit's own baseline with SHA-256,
//! the RPM database with whatever its header names (SHA-256 on current rpm; MD5, SHA-1,
//! SHA-384 or SHA-512 on packages built with other settings).
//! Files are read in fixed-size chunks so memory stays flat whatever the file size.

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use std::fmt;
use std::io::Read;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Md5,
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    /// The name the reports use (`md5`, `sha256`, as the tools that print them say).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// The digest's length in bytes.
    fn len(self) -> usize {
        match self {
            Algorithm::Md5 => 16,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha384 => 48,
            Algorithm::Sha512 => 64,
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Digest {
    Md5([u8; 16]),
    Sha256([u8; 32]),
    /// The rarer ones, kept on the heap so that the common digests stay small
    /// (a tree of a hundred thousand files holds one per file).
    Other(Algorithm, Box<[u8]>),
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Digest::Md5(_) => Algorithm::Md5,
            Digest::Sha256(_) => Algorithm::Sha256,
            Digest::Other(a, _) => *a,
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Digest::Md5(b) => b,
            Digest::Sha256(b) => b,
            Digest::Other(_, b) => b,
        }
    }

    pub(crate) fn to_hex(&self) -> String {
        hex::encode(self.as_bytes())
    }

    /// Parses a hex digest of the given algorithm; `None` when it is not exactly that.
    pub fn from_hex(algorithm: Algorithm, text: &str) -> Option<Digest> {
        match algorithm {
            Algorithm::Md5 => {
                let mut b = [0u8; 16];
                hex::decode_to_slice(text, &mut b).ok()?;
                Some(Digest::Md5(b))
            }
            Algorithm::Sha256 => {
                let mut b = [0u8; 32];
                hex::decode_to_slice(text, &mut b).ok()?;
                Some(Digest::Sha256(b))
            }
            other => {
                let mut b = vec![0u8; other.len()];
                hex::decode_to_slice(text, &mut b).ok()?;
                Some(Digest::Other(other, b.into_boxed_slice()))
            }
        }
    }

    /// Hashes a byte slice already in memory.
    pub fn of_bytes(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut h = Hasher::new(algorithm);
        h.update(data);
        h.finish()
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}:{}", self.algorithm(), self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An incremental hasher for any of the algorithms.
pub(crate) enum Hasher {
    Md5(Md5),
    Sha1(Sha1),
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl Hasher {
    pub(crate) fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Md5 => Hasher::Md5(Md5::new()),
            Algorithm::Sha1 => Hasher::Sha1(Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha384 => Hasher::Sha384(Sha384::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub(crate) fn finish(self) -> Digest {
        let other = |a, bytes: &[u8]| Digest::Other(a, bytes.into());
        match self {
            Hasher::Md5(h) => Digest::Md5(h.finalize().into()),
            Hasher::Sha1(h) => other(Algorithm::Sha1, &h.finalize()),
            Hasher::Sha256(h) => Digest::Sha256(h.finalize().into()),
            Hasher::Sha384(h) => other(Algorithm::Sha384, &h.finalize()),
            Hasher::Sha512(h) => other(Algorithm::Sha512, &h.finalize()),
        }
    }
}

/// Chunk size for streaming reads: large enough for throughput, small enough that
/// many threads hashing at once stay within a few megabytes.
pub(crate) const CHUNK: usize = 256 * 1024;

/// Hashes everything a reader yields, with one or two algorithms in a single pass.
pub(crate) fn digest_reader(
    mut reader: impl Read,
    algorithms: &[Algorithm],
) -> std::io::Result<(Vec<Digest>, u64)> {
    let mut hashers: Vec<Hasher> = algorithms.iter().map(|a| Hasher::new(*a)).collect();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        for h in &mut hashers {
            h.update(&buf[..n]);
        }
    }
    Ok((hashers.into_iter().map(Hasher::finish).collect(), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let (d, n) = digest_reader(&b"abc"[..], &[Algorithm::Md5, Algorithm::Sha256]).unwrap();
        assert_eq!(n, 3);
        assert_eq!(d[0].to_hex(), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            d[1].to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            Digest::from_hex(Algorithm::Md5, "900150983cd24fb0d6963f7d28e17f72"),
            Some(d[0].clone())
        );
        assert_eq!(Digest::from_hex(Algorithm::Md5, "zz"), None);
        // The rarer algorithms rpm headers may name, with their published test vectors.
        let (d, _) = digest_reader(
            &b"abc"[..],
            &[Algorithm::Sha1, Algorithm::Sha384, Algorithm::Sha512],
        )
        .unwrap();
        assert_eq!(d[0].to_hex(), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert!(d[1]
            .to_hex()
            .starts_with("cb00753f45a35e8bb5a03d699ac65007"));
        assert!(d[2]
            .to_hex()
            .starts_with("ddaf35a193617abacc417349ae204131"));
        assert_eq!(
            Digest::from_hex(Algorithm::Sha1, &d[0].to_hex()),
            Some(d[0].clone())
        );
    }
}
