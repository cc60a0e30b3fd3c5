//! The RPM header: the one structure both the RPM database (one header per installed
//! package) and a `.rpm` file (a signature header, then the package header) are made
//! of. Read here by hand rather than through a crate: the format is small and fixed
//! (an index of 16-byte entries `tag, type, offset, count`, big-endian, then a data
//! store), and reading it here lets every offset and count be checked against the
//! store before anything is taken from it, so a hostile database or archive gives a
//! sentence naming what is wrong, never a panic or an allocation of its choosing.

use std::io::Read;

/// The magic in front of a header in a `.rpm` file (the database stores headers
/// without it): `8e ad e8`, header version 1, four reserved bytes.
pub(crate) const HEADER_MAGIC: [u8; 4] = [0x8e, 0xad, 0xe8, 0x01];

/// rpm's own ceiling on a header's index (`hdrchkTags`) and data store
/// (`hdrchkData`): anything larger is not a header rpm would have written.
const MAX_ENTRIES: u32 = 0xffff;
const MAX_DATA: u32 = 256 * 1024 * 1024;

pub(crate) const TAG_NAME: u32 = 1000;
pub(crate) const TAG_VERSION: u32 = 1001;
pub(crate) const TAG_RELEASE: u32 = 1002;
pub(crate) const TAG_EPOCH: u32 = 1003;
pub(crate) const TAG_ARCH: u32 = 1022;
pub(crate) const TAG_FILEMODES: u32 = 1030;
pub(crate) const TAG_FILEDIGESTS: u32 = 1035;
pub(crate) const TAG_FILELINKTOS: u32 = 1036;
pub(crate) const TAG_FILEFLAGS: u32 = 1037;
pub(crate) const TAG_DIRINDEXES: u32 = 1116;
pub(crate) const TAG_BASENAMES: u32 = 1117;
pub(crate) const TAG_DIRNAMES: u32 = 1118;
pub(crate) const TAG_PAYLOADFORMAT: u32 = 1124;
pub(crate) const TAG_PAYLOADCOMPRESSOR: u32 = 1125;
pub(crate) const TAG_FILEDIGESTALGO: u32 = 5011;

const TYPE_INT16: u32 = 3;
const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;

#[derive(Debug, Clone, Copy)]
struct Entry {
    tag: u32,
    kind: u32,
    offset: u32,
    count: u32,
}

/// A parsed header: the index and the data store it points into.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    entries: Vec<Entry>,
    data: Vec<u8>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The index length and data length of a header from its first 8 bytes, checked
/// against rpm's limits.
fn lengths(il: u32, dl: u32) -> Result<(usize, usize), String> {
    if il == 0 || il > MAX_ENTRIES {
        return Err(format!(
            "header claims {il} index entries (rpm allows 1 to {MAX_ENTRIES})"
        ));
    }
    if dl > MAX_DATA {
        return Err(format!(
            "header claims {dl} bytes of data (rpm allows at most {MAX_DATA})"
        ));
    }
    Ok((il as usize, dl as usize))
}

impl Header {
    /// Parses a header as the database stores it: `il`, `dl`, the index, the data.
    /// Bytes after the data store are ignored (a `.rpm` reader passes exact lengths).
    pub(crate) fn parse(blob: &[u8]) -> Result<Header, String> {
        if blob.len() < 8 {
            return Err(format!("header of {} bytes is too short", blob.len()));
        }
        let (il, dl) = lengths(be32(blob, 0), be32(blob, 4))?;
        let need = 8 + il * 16 + dl;
        if blob.len() < need {
            return Err(format!(
                "header truncated: {il} entries and {dl} data bytes need {need} bytes, it has {}",
                blob.len()
            ));
        }
        let entries = (0..il)
            .map(|i| {
                let at = 8 + i * 16;
                Entry {
                    tag: be32(blob, at),
                    kind: be32(blob, at + 4),
                    offset: be32(blob, at + 8),
                    count: be32(blob, at + 12),
                }
            })
            .collect();
        let data = blob[8 + il * 16..need].to_vec();
        Ok(Header { entries, data })
    }

    /// Reads a header with its magic from a `.rpm` stream; returns it and how many
    /// bytes it took (the signature header is followed by padding to 8 bytes).
    pub(crate) fn read_from(r: &mut dyn Read) -> Result<(Header, usize), String> {
        let mut intro = [0u8; 16];
        r.read_exact(&mut intro)
            .map_err(|e| format!("truncated: the file ends inside a header's intro ({e})"))?;
        if intro[..4] != HEADER_MAGIC {
            return Err("no header magic (8e ad e8 01) where a header should start".into());
        }
        let (il, dl) = lengths(be32(&intro, 8), be32(&intro, 12))?;
        let mut blob = intro[8..].to_vec();
        let rest = il * 16 + dl;
        blob.resize(8 + rest, 0);
        r.read_exact(&mut blob[8..]).map_err(|e| {
            format!("truncated: the file ends inside a header of {rest} bytes ({e})")
        })?;
        Ok((Header::parse(&blob)?, 16 + rest))
    }

    fn entry(&self, tag: u32) -> Option<Entry> {
        self.entries.iter().copied().find(|e| e.tag == tag)
    }

    fn bad(&self, tag: u32, what: &str) -> String {
        format!("header tag {tag}: {what}")
    }

    /// The NUL-terminated strings of an entry (one for STRING, `count` for arrays).
    fn raw_strings(&self, tag: u32, e: Entry) -> Result<Vec<&[u8]>, String> {
        let count = match e.kind {
            TYPE_STRING => 1,
            TYPE_STRING_ARRAY | TYPE_I18NSTRING => e.count as usize,
            k => return Err(self.bad(tag, &format!("type {k} where strings were expected"))),
        };
        // Every string takes at least its NUL: a count beyond the store is a lie.
        if count > self.data.len() {
            return Err(self.bad(tag, "more strings than the data store can hold"));
        }
        let mut at = e.offset as usize;
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let rest = self
                .data
                .get(at..)
                .ok_or_else(|| self.bad(tag, "offset beyond the data store"))?;
            let end = rest
                .iter()
                .position(|b| *b == 0)
                .ok_or_else(|| self.bad(tag, "string without its terminating NUL"))?;
            out.push(&rest[..end]);
            at += end + 1;
        }
        Ok(out)
    }

    /// A string tag (the first string of an array or an I18N string).
    pub(crate) fn string(&self, tag: u32) -> Result<Option<String>, String> {
        let Some(e) = self.entry(tag) else {
            return Ok(None);
        };
        let v = self.raw_strings(tag, e)?;
        Ok(v.first().map(|s| String::from_utf8_lossy(s).into_owned()))
    }

    /// A string-array tag, as bytes (file names need not be UTF-8).
    pub(crate) fn byte_strings(&self, tag: u32) -> Result<Option<Vec<Vec<u8>>>, String> {
        let Some(e) = self.entry(tag) else {
            return Ok(None);
        };
        Ok(Some(
            self.raw_strings(tag, e)?
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect(),
        ))
    }

    fn ints(&self, tag: u32, kind: u32, width: usize) -> Result<Option<Vec<u32>>, String> {
        let Some(e) = self.entry(tag) else {
            return Ok(None);
        };
        if e.kind != kind {
            return Err(self.bad(tag, &format!("type {} where {kind} was expected", e.kind)));
        }
        let start = e.offset as usize;
        let len = (e.count as usize)
            .checked_mul(width)
            .ok_or_else(|| self.bad(tag, "count overflows"))?;
        let bytes = start
            .checked_add(len)
            .and_then(|end| self.data.get(start..end))
            .ok_or_else(|| self.bad(tag, "values run past the data store"))?;
        Ok(Some(
            bytes
                .chunks_exact(width)
                .map(|c| match width {
                    2 => u16::from_be_bytes([c[0], c[1]]) as u32,
                    _ => be32(c, 0),
                })
                .collect(),
        ))
    }

    pub(crate) fn int32s(&self, tag: u32) -> Result<Option<Vec<u32>>, String> {
        self.ints(tag, TYPE_INT32, 4)
    }

    pub(crate) fn int16s(&self, tag: u32) -> Result<Option<Vec<u32>>, String> {
        self.ints(tag, TYPE_INT16, 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header with one STRING and one INT32 array, built by hand.
    fn sample() -> Vec<u8> {
        let mut data = b"amdgpu-dkms\0".to_vec();
        while !data.len().is_multiple_of(4) {
            data.push(0);
        }
        let ints_at = data.len() as u32;
        data.extend_from_slice(&7u32.to_be_bytes());
        data.extend_from_slice(&9u32.to_be_bytes());
        let mut out = Vec::new();
        out.extend_from_slice(&2u32.to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        for (tag, kind, off, count) in [
            (TAG_NAME, TYPE_STRING, 0, 1),
            (TAG_FILEFLAGS, TYPE_INT32, ints_at, 2),
        ] {
            for v in [tag, kind, off, count] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        out.extend_from_slice(&data);
        out
    }

    #[test]
    fn reads_tags_and_refuses_lies() {
        let blob = sample();
        let h = Header::parse(&blob).unwrap();
        assert_eq!(h.string(TAG_NAME).unwrap().as_deref(), Some("amdgpu-dkms"));
        assert_eq!(h.int32s(TAG_FILEFLAGS).unwrap(), Some(vec![7, 9]));
        assert_eq!(h.string(TAG_VERSION).unwrap(), None);
        assert!(h.int16s(TAG_FILEFLAGS).is_err());
        assert!(Header::parse(&blob[..blob.len() - 1])
            .unwrap_err()
            .contains("truncated"));
        // A count that runs past the store.
        let mut lie = blob.clone();
        lie[8 + 16 + 12..8 + 16 + 16].copy_from_slice(&0x4000_0000u32.to_be_bytes());
        assert!(Header::parse(&lie).unwrap().int32s(TAG_FILEFLAGS).is_err());
        // An index that claims more entries than rpm allows.
        let mut huge = blob;
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Header::parse(&huge).unwrap_err().contains("index entries"));
    }
}
