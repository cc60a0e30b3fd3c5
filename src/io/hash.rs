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
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Digest {
    Md5([u8; 16]),
    Sha256([u8; 32]),
    Sha1([u8; 20]),
    /// SHA-384 and SHA-512 are kept to their first 256 bits, on both sides of every
    /// comparison: a 256-bit prefix resists collisions as SHA-256 does (SHA-512/256 is
    /// that), and a file's result stays as small as with SHA-256 (a tree of a hundred
    /// thousand files holds two digests per file).
    Sha384([u8; 32]),
    Sha512([u8; 32]),
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Digest::Md5(_) => Algorithm::Md5,
            Digest::Sha256(_) => Algorithm::Sha256,
            Digest::Sha1(_) => Algorithm::Sha1,
            Digest::Sha384(_) => Algorithm::Sha384,
            Digest::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Digest::Md5(b) => b,
            Digest::Sha256(b) | Digest::Sha384(b) | Digest::Sha512(b) => b,
            Digest::Sha1(b) => b,
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
            Algorithm::Sha1 => {
                let mut b = [0u8; 20];
                hex::decode_to_slice(text, &mut b).ok()?;
                Some(Digest::Sha1(b))
            }
            // The full digest (the rpm database), or the 256 bits kept of it (what
            // `to_hex` prints, and kfd-audit's own state holds).
            Algorithm::Sha384 | Algorithm::Sha512 => {
                let full = if algorithm == Algorithm::Sha384 {
                    96
                } else {
                    128
                };
                if text.len() != full && text.len() != 64 {
                    return None;
                }
                let mut b = [0u8; 32];
                hex::decode_to_slice(&text[..64], &mut b).ok()?;
                hex::decode(text).ok()?;
                Some(if algorithm == Algorithm::Sha384 {
                    Digest::Sha384(b)
                } else {
                    Digest::Sha512(b)
                })
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

/// The first 256 bits of a longer digest (see [`Digest::Sha384`]).
fn prefix(full: &[u8]) -> [u8; 32] {
    let mut b = [0u8; 32];
    b.copy_from_slice(&full[..32]);
    b
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
        match self {
            Hasher::Md5(h) => Digest::Md5(h.finalize().into()),
            Hasher::Sha1(h) => Digest::Sha1(h.finalize().into()),
            Hasher::Sha256(h) => Digest::Sha256(h.finalize().into()),
            Hasher::Sha384(h) => Digest::Sha384(prefix(&h.finalize())),
            Hasher::Sha512(h) => Digest::Sha512(prefix(&h.finalize())),
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
        // A full SHA-512 as the rpm database writes it reads as the hasher's digest.
        let full = "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
                    2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";
        assert_eq!(
            Digest::from_hex(Algorithm::Sha512, full),
            Some(d[2].clone())
        );
        assert_eq!(
            Digest::from_hex(Algorithm::Sha512, &full[..64]),
            Some(d[2].clone())
        );
        assert_eq!(Digest::from_hex(Algorithm::Sha512, &full[..100]), None);
        // The common digests stay small: a large tree holds two per file.
        assert!(std::mem::size_of::<Digest>() <= 33);
    }
}
