//! Canonical encoding of op definitions and the digests built from it.
//!
//! Everything that reaches a digest goes through [`CanonicalEncoder`]: a format
//! version and the op kind first, then every field as a tag byte, its name and a
//! length-prefixed value. Nothing here depends on `std::hash::Hash`, on struct layout
//! or on map iteration order, so a digest computed today is the digest computed by
//! the next release — unless [`FORMAT_VERSION`] is bumped on purpose, which
//! invalidates every cache key at once (the golden tests in this module pin it).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// Version of the canonical encoding and of the key derivations in this crate.
///
/// Bump it whenever the bytes produced for an unchanged definition change: old cache
/// records then simply stop matching instead of matching the wrong thing.
pub const FORMAT_VERSION: u32 = 1;

/// Magic prefix of every canonical encoding, so that our preimages cannot collide
/// with other sha256 inputs (blobs, configs) by accident.
const MAGIC: &[u8] = b"hoist.canonical";

/// A sha256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// Wraps raw sha256 bytes (e.g. a digest computed while streaming a file).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Shown as `sha256:<hex>`, the OCI spelling.
impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// Error parsing a digest string.
#[derive(Debug, thiserror::Error)]
#[error("failed to parse digest `{input}`: expected `sha256:` followed by 64 lowercase hex digits")]
pub struct ParseDigestError {
    input: String,
}

/// Parses `sha256:<64 lowercase hex>`, the form [`Digest`]'s `Display` writes.
impl FromStr for Digest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || ParseDigestError {
            input: s.to_owned(),
        };
        let hex_part = s.strip_prefix("sha256:").ok_or_else(error)?;
        if hex_part.len() != 64 || hex_part.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(error());
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| error())?;
        Ok(Digest(bytes))
    }
}

/// The cache key of a vertex: what the cache index is looked up and recorded by.
///
/// Derived from the op's definition, its inputs' cache keys or the content it reads
/// from them, and its selectors; never from names, descriptions, limits or flags.
/// Stable across builds and releases (same [`FORMAT_VERSION`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct CacheKey(pub Digest);

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The definition digest of a vertex: its op definition and its inputs' definition
/// digests. Used only to run identical work once within one build; never stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct DefinitionDigest(pub Digest);

impl fmt::Display for DefinitionDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The canonical encoding of an op definition (or of any value entering a digest),
/// produced by [`CanonicalEncoder::finish`].
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct CanonicalBytes(Vec<u8>);

impl CanonicalBytes {
    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// sha256 of the encoded bytes.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.0)
    }
}

// One tag per field type, so that e.g. the string "1" and the integer 1 never encode
// alike, and a list can't be confused with its first element.
const TAG_BYTES: u8 = 1;
const TAG_STR: u8 = 2;
const TAG_U64: u8 = 3;
const TAG_BOOL: u8 = 4;
const TAG_NONE: u8 = 5;
const TAG_LIST: u8 = 6;
const TAG_PAIRS: u8 = 7;
const TAG_NESTED: u8 = 8;
const TAG_DIGEST: u8 = 9;

/// Writes a canonical encoding field by field.
///
/// The encoding is: magic, [`FORMAT_VERSION`], the kind (e.g. `"exec"`) and the kind's
/// own version, then for each field: a type tag, the field name and the value, every
/// variable-length part prefixed by its length as a big-endian u64. Fields are written
/// in the order the caller writes them; callers write them in a fixed order and never
/// iterate a `HashMap` (sort first, or use a `BTreeMap`).
///
/// ```
/// use hoist_builder::CanonicalEncoder;
///
/// let mut encoder = CanonicalEncoder::new("exec", 1);
/// encoder
///     .str_list("argv", ["/bin/sh", "-c", "make"])
///     .pairs("env", [("PATH", "/usr/bin")])
///     .str("cwd", "/src")
///     .optional_str("user", None);
/// let definition = encoder.finish();
/// assert_eq!(definition.digest().hex().len(), 64);
/// ```
#[derive(Clone, Debug)]
pub struct CanonicalEncoder {
    bytes: Vec<u8>,
}

impl CanonicalEncoder {
    /// Starts an encoding of a value of `kind`, whose own field layout has `version`.
    ///
    /// Bump `version` when the fields written for `kind` change meaning.
    pub fn new(kind: &str, version: u32) -> Self {
        let mut encoder = CanonicalEncoder { bytes: Vec::new() };
        encoder.raw(MAGIC);
        encoder
            .bytes
            .extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        encoder.raw(kind.as_bytes());
        encoder.bytes.extend_from_slice(&version.to_be_bytes());
        encoder
    }

    fn raw(&mut self, value: &[u8]) {
        self.bytes
            .extend_from_slice(&(value.len() as u64).to_be_bytes());
        self.bytes.extend_from_slice(value);
    }

    fn field(&mut self, tag: u8, name: &str) {
        self.bytes.push(tag);
        self.raw(name.as_bytes());
    }

    /// Writes a byte string.
    pub fn bytes(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.field(TAG_BYTES, name);
        self.raw(value);
        self
    }

    /// Writes a UTF-8 string.
    pub fn str(&mut self, name: &str, value: &str) -> &mut Self {
        self.field(TAG_STR, name);
        self.raw(value.as_bytes());
        self
    }

    /// Writes a string or an explicit "absent", distinct from the empty string.
    pub fn optional_str(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.str(name, value),
            None => {
                self.field(TAG_NONE, name);
                self
            }
        }
    }

    /// Writes an unsigned integer.
    pub fn u64(&mut self, name: &str, value: u64) -> &mut Self {
        self.field(TAG_U64, name);
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// Writes a boolean.
    pub fn bool(&mut self, name: &str, value: bool) -> &mut Self {
        self.field(TAG_BOOL, name);
        self.bytes.push(u8::from(value));
        self
    }

    /// Writes a digest (e.g. a resolved image manifest digest).
    pub fn digest(&mut self, name: &str, value: &Digest) -> &mut Self {
        self.field(TAG_DIGEST, name);
        self.bytes.extend_from_slice(value.as_bytes());
        self
    }

    /// Writes an ordered list of strings (order is significant).
    pub fn str_list<I, S>(&mut self, name: &str, values: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let values: Vec<S> = values.into_iter().collect();
        self.field(TAG_LIST, name);
        self.bytes
            .extend_from_slice(&(values.len() as u64).to_be_bytes());
        for value in &values {
            self.raw(value.as_ref().as_bytes());
        }
        self
    }

    /// Writes an ordered list of key/value pairs (order is significant: sort them first
    /// if the source is unordered).
    pub fn pairs<I, K, V>(&mut self, name: &str, values: I) -> &mut Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let values: Vec<(K, V)> = values.into_iter().collect();
        self.field(TAG_PAIRS, name);
        self.bytes
            .extend_from_slice(&(values.len() as u64).to_be_bytes());
        for (key, value) in &values {
            self.raw(key.as_ref().as_bytes());
            self.raw(value.as_ref().as_bytes());
        }
        self
    }

    /// Writes a nested encoding (e.g. one mount of an exec, one action of a file op).
    pub fn nested(&mut self, name: &str, value: &CanonicalBytes) -> &mut Self {
        self.field(TAG_NESTED, name);
        self.raw(value.as_bytes());
        self
    }

    /// Writes a nested encoding or an explicit "absent".
    pub fn optional_nested(&mut self, name: &str, value: Option<&CanonicalBytes>) -> &mut Self {
        match value {
            Some(value) => self.nested(name, value),
            None => {
                self.field(TAG_NONE, name);
                self
            }
        }
    }

    /// Writes a digest or an explicit "absent".
    pub fn optional_digest(&mut self, name: &str, value: Option<&Digest>) -> &mut Self {
        match value {
            Some(value) => self.digest(name, value),
            None => {
                self.field(TAG_NONE, name);
                self
            }
        }
    }

    /// Ends the encoding.
    pub fn finish(&self) -> CanonicalBytes {
        CanonicalBytes(self.bytes.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn digest_round_trips_through_its_string_form() {
        let digest = Digest::of(b"hello");
        let text = digest.to_string();
        assert_eq!(
            text,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(text.parse::<Digest>().unwrap(), digest);
    }

    #[test]
    fn digest_parse_rejects_other_forms() {
        for bad in [
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
            "sha512:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
            "sha256:2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824",
            "sha256:2cf24d",
            "sha256:zzf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        ] {
            let error = bad.parse::<Digest>().unwrap_err();
            assert!(error.to_string().contains(bad), "{error}");
        }
    }

    /// Golden value: pins the canonical encoding format. If this test fails, the bytes
    /// of an unchanged definition changed, which silently invalidates (or worse,
    /// aliases) every recorded cache key. Either revert the change, or bump
    /// `FORMAT_VERSION` on purpose and update this value in the same commit.
    #[test]
    fn golden_definition_digest_pins_the_encoding() {
        let mut encoder = CanonicalEncoder::new("exec", 1);
        encoder
            .str_list("argv", ["/bin/sh", "-c", "make"])
            .pairs("env", [("PATH", "/usr/bin"), ("CC", "gcc")])
            .str("cwd", "/src")
            .optional_str("user", None)
            .u64("uid", 0)
            .bool("network", false)
            .bytes("raw", b"\x00\xff")
            .digest("image", &Digest::of(b"base"));
        let nested = CanonicalEncoder::new("mount", 1)
            .str("target", "/cache")
            .finish();
        encoder.nested("mount", &nested);
        assert_eq!(
            encoder.finish().digest().hex(),
            "98f24789c6e9d99411174dae38badb539fd4192fca174f4b05b48eafe6e54cc9"
        );
    }

    /// The layout, byte by byte, for a one-field value (see `CanonicalEncoder`).
    #[test]
    fn encoding_layout_is_as_documented() {
        let bytes = CanonicalEncoder::new("k", 7).str("a", "bc").finish();
        let mut expected = Vec::new();
        expected.extend_from_slice(&15u64.to_be_bytes());
        expected.extend_from_slice(b"hoist.canonical");
        expected.extend_from_slice(&1u32.to_be_bytes());
        expected.extend_from_slice(&1u64.to_be_bytes());
        expected.extend_from_slice(b"k");
        expected.extend_from_slice(&7u32.to_be_bytes());
        expected.push(2);
        expected.extend_from_slice(&1u64.to_be_bytes());
        expected.extend_from_slice(b"a");
        expected.extend_from_slice(&2u64.to_be_bytes());
        expected.extend_from_slice(b"bc");
        assert_eq!(bytes.as_bytes(), expected.as_slice());
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let a = CanonicalEncoder::new("k", 1).str("a", "bc").finish();
        let b = CanonicalEncoder::new("k", 1).str("ab", "c").finish();
        assert_ne!(a.digest(), b.digest());

        let list = CanonicalEncoder::new("k", 1)
            .str_list("x", ["a", "b"])
            .finish();
        let joined = CanonicalEncoder::new("k", 1).str_list("x", ["ab"]).finish();
        assert_ne!(list.digest(), joined.digest());

        let none = CanonicalEncoder::new("k", 1)
            .optional_str("x", None)
            .finish();
        let empty = CanonicalEncoder::new("k", 1)
            .optional_str("x", Some(""))
            .finish();
        assert_ne!(none.digest(), empty.digest());

        let number = CanonicalEncoder::new("k", 1).u64("x", 0x31).finish();
        let text = CanonicalEncoder::new("k", 1).str("x", "1").finish();
        assert_ne!(number.digest(), text.digest());

        let v1 = CanonicalEncoder::new("k", 1).finish();
        let v2 = CanonicalEncoder::new("k", 2).finish();
        assert_ne!(v1.digest(), v2.digest());
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Field {
        Str(String, String),
        Bytes(String, Vec<u8>),
        U64(String, u64),
        Bool(String, bool),
        List(String, Vec<String>),
    }

    fn field() -> impl Strategy<Value = Field> {
        let name = "[a-c]{0,2}";
        prop_oneof![
            (name, "[a-c]{0,3}").prop_map(|(n, v)| Field::Str(n, v)),
            (name, proptest::collection::vec(any::<u8>(), 0..4))
                .prop_map(|(n, v)| Field::Bytes(n, v)),
            (name, 0u64..3).prop_map(|(n, v)| Field::U64(n, v)),
            (name, any::<bool>()).prop_map(|(n, v)| Field::Bool(n, v)),
            (name, proptest::collection::vec("[a-c]{0,2}", 0..3))
                .prop_map(|(n, v)| Field::List(n, v)),
        ]
    }

    fn encode(kind: &str, fields: &[Field]) -> CanonicalBytes {
        let mut encoder = CanonicalEncoder::new(kind, 1);
        for field in fields {
            match field {
                Field::Str(n, v) => encoder.str(n, v),
                Field::Bytes(n, v) => encoder.bytes(n, v),
                Field::U64(n, v) => encoder.u64(n, *v),
                Field::Bool(n, v) => encoder.bool(n, *v),
                Field::List(n, v) => encoder.str_list(n, v),
            };
        }
        encoder.finish()
    }

    proptest! {
        // Small alphabets make near-collisions (shifted boundaries, same text in
        // another field type) likely, which is what this is about.
        #[test]
        fn different_definitions_have_different_digests(
            kind_a in "[ab]{1,2}",
            kind_b in "[ab]{1,2}",
            a in proptest::collection::vec(field(), 0..4),
            b in proptest::collection::vec(field(), 0..4),
        ) {
            let same = kind_a == kind_b && a == b;
            let bytes_a = encode(&kind_a, &a);
            let bytes_b = encode(&kind_b, &b);
            prop_assert_eq!(same, bytes_a == bytes_b);
            prop_assert_eq!(same, bytes_a.digest() == bytes_b.digest());
        }
    }
}
