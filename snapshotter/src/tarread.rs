//! A small streaming tar reader for untrusted layers.
//!
//! It exists (instead of the `tar` crate's reader) to bound memory: PAX and
//! GNU long-name headers are read into memory, so each is limited to
//! [`MAX_EXTENSION`] bytes; file data is never buffered. It understands
//! ustar, GNU (long names and links, base-256 numbers) and PAX (path,
//! linkpath, size, uid, gid, mtime, `SCHILY.xattr.*`), which covers what
//! Docker, BuildKit, Buildah, Go's archive/tar and GNU tar write. GNU sparse
//! files are refused.
//!
//! Every count taken from a header is checked: sizes up to `u64::MAX` skip
//! (and fail at the end of the input) instead of overflowing, and the PAX
//! records of one entry, which are kept until the entry's header, total at
//! most [`MAX_EXTENSION`] bytes, so a run of PAX headers cannot grow memory.

use std::io::{self, Read};

/// Largest PAX or GNU long-name header accepted, and the most PAX data
/// gathered for one entry.
pub(crate) const MAX_EXTENSION: u64 = 1 << 20;

const BLOCK: usize = 512;

/// One entry's header, with PAX and GNU extensions folded in.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawEntry {
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub typeflag: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub size: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn field(h: &[u8]) -> &[u8] {
    let end = h.iter().position(|b| *b == 0).unwrap_or(h.len());
    &h[..end]
}

fn number(h: &[u8], what: &str) -> io::Result<u64> {
    if h.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256: big-endian, the top bit of the first byte is a flag.
        if h[0] == 0xff {
            return Err(bad(format!("negative {what} in tar header")));
        }
        let mut v: u64 = u64::from(h[0] & 0x7f);
        for b in &h[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(*b)))
                .ok_or_else(|| bad(format!("{what} in tar header overflows")))?;
        }
        return Ok(v);
    }
    let s: Vec<u8> = h
        .iter()
        .copied()
        .take_while(|b| *b != 0)
        .filter(|b| *b != b' ')
        .collect();
    if s.is_empty() {
        // Empty numeric fields mean 0, as Go's archive/tar reads them.
        return Ok(0);
    }
    let s = std::str::from_utf8(&s)
        .map_err(|_| bad(format!("{what} in tar header is not a number")))?;
    u64::from_str_radix(s, 8).map_err(|_| {
        bad(format!(
            "{what} in tar header is not an octal number: {s:?}"
        ))
    })
}

fn parse_decimal(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    s.split('.').next()?.parse().ok()
}

/// Parses PAX records ("<len> <key>=<value>\n") into (key, value) pairs.
fn pax_records(mut data: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    while !data.is_empty() && data[0] != 0 {
        let space = data
            .iter()
            .position(|b| *b == b' ')
            .ok_or_else(|| bad("malformed PAX record: no length"))?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("malformed PAX record: bad length"))?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad("malformed PAX record: length does not match"));
        }
        let record = &data[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|b| *b == b'=')
            .ok_or_else(|| bad("malformed PAX record: no `=`"))?;
        out.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

pub(crate) struct TarReader<R: Read> {
    inner: R,
    /// Data bytes of the current entry not read yet.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
}

impl<R: Read> TarReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        TarReader {
            inner,
            remaining: 0,
            padding: 0,
        }
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        if copied < n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the layer ends inside an entry",
            ));
        }
        Ok(())
    }

    /// Reads a whole extension header's data, refusing oversized ones.
    fn read_extension(&mut self, size: u64, kind: &str) -> io::Result<Vec<u8>> {
        if size > MAX_EXTENSION {
            return Err(bad(format!(
                "{kind} header of {size} bytes is larger than the {MAX_EXTENSION}-byte limit"
            )));
        }
        let mut data = vec![0u8; size as usize];
        self.inner.read_exact(&mut data)?;
        self.skip((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64)?;
        Ok(data)
    }

    /// The next entry, skipping what is left of the current one. `None` at
    /// the end-of-archive marker or at a clean end of input.
    pub(crate) fn next_entry(&mut self) -> io::Result<Option<RawEntry>> {
        // A base-256 size near u64::MAX plus its padding would overflow;
        // no input is that long, so saturating only changes which error.
        self.skip(self.remaining.saturating_add(self.padding))?;
        self.remaining = 0;
        self.padding = 0;
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut pax_bytes: u64 = 0;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            let mut h = [0u8; BLOCK];
            let mut got = 0;
            while got < BLOCK {
                match self.inner.read(&mut h[got..])? {
                    0 => break,
                    n => got += n,
                }
            }
            if got == 0 && pax.is_empty() && long_name.is_none() && long_link.is_none() {
                return Ok(None);
            }
            if got < BLOCK {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the layer ends inside a tar header",
                ));
            }
            if h.iter().all(|b| *b == 0) {
                if !pax.is_empty() || long_name.is_some() || long_link.is_some() {
                    return Err(bad("extension headers without an entry after them"));
                }
                return Ok(None);
            }
            let stored = number(&h[148..156], "checksum")?;
            let unsigned: u64 = h
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        u64::from(*b)
                    }
                })
                .sum();
            let signed: i64 = h
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        i64::from(*b as i8)
                    }
                })
                .sum();
            if stored != unsigned && stored as i64 != signed {
                return Err(bad("tar header checksum mismatch"));
            }
            let typeflag = h[156];
            let size = number(&h[124..136], "size")?;
            match typeflag {
                b'x' => {
                    pax_bytes = pax_bytes.saturating_add(size);
                    // One oversized header gets read_extension's message.
                    if size <= MAX_EXTENSION && pax_bytes > MAX_EXTENSION {
                        return Err(bad(format!(
                            "PAX headers of one entry total more than the {MAX_EXTENSION}-byte limit"
                        )));
                    }
                    let data = self.read_extension(size, "PAX")?;
                    pax.extend(pax_records(&data)?);
                    continue;
                }
                b'g' => {
                    // Global defaults: nothing in a layer needs them.
                    self.read_extension(size, "PAX global")?;
                    continue;
                }
                b'L' | b'K' => {
                    let mut data = self.read_extension(size, "GNU long name")?;
                    while data.last() == Some(&0) {
                        data.pop();
                    }
                    if typeflag == b'L' {
                        long_name = Some(data);
                    } else {
                        long_link = Some(data);
                    }
                    continue;
                }
                b'S' => return Err(bad("GNU sparse files are not supported in layers")),
                _ => {}
            }
            let mut e = RawEntry {
                path: field(&h[0..100]).to_vec(),
                link: field(&h[157..257]).to_vec(),
                typeflag,
                mode: number(&h[100..108], "mode")? as u32,
                uid: number(&h[108..116], "uid")?,
                gid: number(&h[116..124], "gid")?,
                mtime: number(&h[136..148], "mtime")? as i64,
                size,
                dev_major: 0,
                dev_minor: 0,
                xattrs: Vec::new(),
            };
            if &h[257..263] == b"ustar\0" {
                let prefix = field(&h[345..500]);
                if !prefix.is_empty() {
                    let mut p = prefix.to_vec();
                    p.push(b'/');
                    p.extend_from_slice(&e.path);
                    e.path = p;
                }
            }
            if matches!(typeflag, b'3' | b'4') {
                e.dev_major = number(&h[329..337], "device major")? as u32;
                e.dev_minor = number(&h[337..345], "device minor")? as u32;
            }
            if let Some(n) = long_name.take() {
                e.path = n;
            }
            if let Some(l) = long_link.take() {
                e.link = l;
            }
            for (k, v) in pax.drain(..) {
                match k.as_slice() {
                    b"path" => e.path = v,
                    b"linkpath" => e.link = v,
                    b"size" => {
                        e.size = parse_decimal(&v)
                            .and_then(|s| u64::try_from(s).ok())
                            .ok_or_else(|| bad("bad PAX size"))?
                    }
                    b"uid" => e.uid = parse_decimal(&v).unwrap_or(0).max(0) as u64,
                    b"gid" => e.gid = parse_decimal(&v).unwrap_or(0).max(0) as u64,
                    b"mtime" => e.mtime = parse_decimal(&v).unwrap_or(e.mtime),
                    _ => {
                        if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                            e.xattrs.push((name.to_vec(), v));
                        }
                    }
                }
            }
            // These types carry no data whatever the size field says (as in
            // Go's archive/tar).
            if matches!(typeflag, b'1' | b'2' | b'3' | b'4' | b'5' | b'6') {
                e.size = 0;
            }
            self.remaining = e.size;
            self.padding = (BLOCK as u64 - e.size % BLOCK as u64) % BLOCK as u64;
            return Ok(Some(e));
        }
    }
}

impl<R: Read> Read for TarReader<R> {
    /// Reads the current entry's data (and nothing past it).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_tar_crate_writes() {
        let mut b = tar::Builder::new(Vec::new());
        let long = "x/".repeat(100) + "file";
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o640);
        h.set_uid(9);
        h.set_mtime(77);
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        b.append_pax_extensions([("SCHILY.xattr.user.a", &b"1"[..])])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "link", "target").unwrap();
        let bytes = b.into_inner().unwrap();
        let mut r = TarReader::new(&bytes[..]);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.path, long.as_bytes());
        assert_eq!((e.mode, e.uid, e.mtime, e.size), (0o640, 9, 77, 3));
        let mut data = Vec::new();
        r.read_to_end(&mut data).unwrap();
        assert_eq!(data, b"abc");
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!((e.typeflag, &e.link[..]), (b'2', &b"target"[..]));
        assert_eq!(e.xattrs, vec![(b"user.a".to_vec(), b"1".to_vec())]);
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn oversized_pax_header_is_refused_without_reading_it() {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(1 << 40);
        h.set_cksum();
        let bytes = h.as_bytes().to_vec();
        let err = TarReader::new(&bytes[..]).next_entry().unwrap_err();
        assert!(
            err.to_string()
                .contains("larger than the 1048576-byte limit"),
            "{err}"
        );
    }
}
