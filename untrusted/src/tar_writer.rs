//! The one tar writer of the workspace, deterministic: ustar headers, PAX
//! records only when needed (long names, large ids or sizes, xattrs), sorted
//! PAX keys, no atime, ctime, user or group names. Layers (the snapshotter),
//! `hoist save` archives (the cache) and `--output type=tar` (the builder)
//! are written with it, so names from images and contexts reach an archive
//! byte for byte, and nothing about the host does.

use std::io::{self, Read, Write};

/// What kind of entry a header describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file of `size` bytes (written next with [`TarWriter::write_data`]).
    File {
        /// Its length.
        size: u64,
    },
    /// A directory.
    Dir,
    /// A symlink.
    Symlink {
        /// What it points at, as stored.
        target: Vec<u8>,
    },
    /// A hard link to an earlier entry.
    Hardlink {
        /// The earlier entry's path.
        target: Vec<u8>,
    },
    /// A character device.
    Char {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    Block {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

/// One entry's header. `path` is relative, without a leading `./`; for
/// directories it has no trailing slash (the writer adds it).
#[derive(Debug, Clone)]
pub struct EntryHeader {
    /// The path inside the archive.
    pub path: Vec<u8>,
    /// What the entry is.
    pub kind: EntryKind,
    /// Permission bits (`& 0o7777` is written).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time in seconds (negative is written as 0).
    pub mtime: i64,
    /// Extended attributes, as PAX `SCHILY.xattr.` records.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

const BLOCK: usize = 512;

fn octal(field: &mut [u8], value: u64) -> bool {
    // Field width minus the NUL terminator.
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    if s.len() > digits {
        return false;
    }
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
    true
}

fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    // "<len> <key>=<value>\n" where len counts itself.
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len.to_string().len() + body != len {
        len = len.to_string().len() + body;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Writes entries into `out`; [`TarWriter::finish`] ends the archive.
pub struct TarWriter<W: Write> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    /// A writer into `out`.
    pub fn new(out: W) -> Self {
        TarWriter { out }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per ustar header field"
    )]
    fn raw_header(
        &mut self,
        name: &[u8],
        typeflag: u8,
        mode: u32,
        uid: u64,
        gid: u64,
        size: u64,
        mtime: u64,
        link: &[u8],
        dev: (u32, u32),
    ) -> io::Result<()> {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name);
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], uid);
        octal(&mut h[116..124], gid);
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], mtime);
        h[156] = typeflag;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        if matches!(typeflag, b'3' | b'4') {
            octal(&mut h[329..337], u64::from(dev.0));
            octal(&mut h[337..345], u64::from(dev.1));
        }
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
        let s = format!("{sum:06o}");
        h[148..154].copy_from_slice(s.as_bytes());
        h[154] = 0;
        h[155] = b' ';
        self.out.write_all(&h)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Writes the header (with a PAX header first if needed). For files, the
    /// caller then writes exactly `size` bytes with [`TarWriter::write_data`].
    pub fn write_header(&mut self, e: &EntryHeader) -> io::Result<()> {
        let mut path = e.path.clone();
        if e.kind == EntryKind::Dir {
            path.push(b'/');
        }
        let (typeflag, size, link, dev): (u8, u64, &[u8], (u32, u32)) = match &e.kind {
            EntryKind::File { size } => (b'0', *size, b"", (0, 0)),
            EntryKind::Dir => (b'5', 0, b"", (0, 0)),
            EntryKind::Symlink { target } => (b'2', 0, target, (0, 0)),
            EntryKind::Hardlink { target } => (b'1', 0, target, (0, 0)),
            EntryKind::Char { major, minor } => (b'3', 0, b"", (*major, *minor)),
            EntryKind::Block { major, minor } => (b'4', 0, b"", (*major, *minor)),
            EntryKind::Fifo => (b'6', 0, b"", (0, 0)),
        };
        const MAX_ID: u64 = 0o7_777_777;
        const MAX_SIZE: u64 = 0o77_777_777_777;
        let mut pax = Vec::new();
        // Keys in byte order, so the same entry always gives the same bytes.
        let mut records: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if e.gid > MAX_ID {
            records.push((b"gid".to_vec(), e.gid.to_string().into_bytes()));
        }
        if link.len() > 100 {
            records.push((b"linkpath".to_vec(), link.to_vec()));
        }
        if path.len() > 100 {
            records.push((b"path".to_vec(), path.clone()));
        }
        if size > MAX_SIZE {
            records.push((b"size".to_vec(), size.to_string().into_bytes()));
        }
        if e.uid > MAX_ID {
            records.push((b"uid".to_vec(), e.uid.to_string().into_bytes()));
        }
        for (name, value) in &e.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(name);
            records.push((key, value.clone()));
        }
        records.sort();
        for (k, v) in &records {
            pax_record(&mut pax, k, v);
        }
        if !pax.is_empty() {
            self.raw_header(
                b"././@PaxHeader",
                b'x',
                0o644,
                0,
                0,
                pax.len() as u64,
                0,
                b"",
                (0, 0),
            )?;
            self.out.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        let short_path = if path.len() > 100 {
            &path[..100]
        } else {
            &path[..]
        };
        let short_link = if link.len() > 100 { &link[..100] } else { link };
        self.raw_header(
            short_path,
            typeflag,
            e.mode & 0o7777,
            e.uid.min(MAX_ID),
            e.gid.min(MAX_ID),
            size.min(MAX_SIZE),
            e.mtime.max(0) as u64,
            short_link,
            dev,
        )
    }

    /// Copies exactly `size` bytes from `data`, then pads to a block.
    /// Returns false if `data` ended early (the rest is zero-filled so the
    /// archive stays well-formed; the caller reports the error).
    pub fn write_data(&mut self, data: &mut dyn Read, size: u64) -> io::Result<bool> {
        let copied = io::copy(&mut data.take(size), &mut self.out)?;
        let mut complete = true;
        if copied < size {
            complete = false;
            io::copy(&mut io::repeat(0).take(size - copied), &mut self.out)?;
        }
        self.pad(size)?;
        Ok(complete)
    }

    /// Writes the end-of-archive marker and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; BLOCK * 2])?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_length_counts_itself() {
        let mut v = Vec::new();
        pax_record(&mut v, b"path", &[b'a'; 95]);
        let s = String::from_utf8(v.clone()).unwrap();
        let len: usize = s.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(len, v.len());
    }

    #[test]
    fn tar_crate_reads_long_names_and_xattrs() {
        let mut w = TarWriter::new(Vec::new());
        let long = "d/".repeat(80) + "file";
        let data = b"hello";
        w.write_header(&EntryHeader {
            path: long.clone().into_bytes(),
            kind: EntryKind::File { size: 5 },
            mode: 0o4755,
            uid: 5_000_000,
            gid: 7,
            mtime: 1234,
            xattrs: vec![(b"security.capability".to_vec(), vec![1, 0, 0, 2])],
        })
        .unwrap();
        assert!(w.write_data(&mut &data[..], 5).unwrap());
        let bytes = w.finish().unwrap();
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut entries = ar.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str().unwrap(), long);
        assert_eq!(e.header().mode().unwrap(), 0o4755);
        assert_eq!(e.header().mtime().unwrap(), 1234);
        let pax: Vec<_> = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|x| x.unwrap().key().unwrap().to_string())
            .collect();
        assert_eq!(pax, ["SCHILY.xattr.security.capability", "path", "uid"]);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut e, &mut s).unwrap();
        assert_eq!(s, "hello");
    }
}
