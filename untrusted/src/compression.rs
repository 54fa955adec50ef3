//! What compression a stream of unknown origin (a layer, an archive, a
//! context) uses, told by its first bytes: the one sniffer of the workspace.

/// How a stream is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed (or not in a format hoist reads).
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

impl Compression {
    /// Detect the compression from the first bytes of a stream.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The name of a compression hoist recognises but does not read (`xz`,
    /// `bzip2`), so that such input is refused by name rather than as a
    /// corrupt tar.
    pub fn sniff_unsupported(head: &[u8]) -> Option<&'static str> {
        if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Some("xz")
        } else if head.starts_with(b"BZh") {
            Some("bzip2")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_name_the_compression() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"ustar"), Compression::None);
        assert_eq!(Compression::sniff(&[0x1f]), Compression::None);
        assert_eq!(Compression::sniff(&[]), Compression::None);
        assert_eq!(
            Compression::sniff_unsupported(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0]),
            Some("xz")
        );
        assert_eq!(Compression::sniff_unsupported(b"BZh91AY"), Some("bzip2"));
        assert_eq!(Compression::sniff_unsupported(&[0x1f, 0x8b]), None);
    }
}
