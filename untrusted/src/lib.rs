//! hoist-untrusted: the one place where input nobody trusts meets the host.
//!
//! A Dockerfile, its context, a base image, an archive or a mount spec names
//! paths; every such path is resolved by [`Root`] *inside* a root directory,
//! as if that directory were `/` (symlinks included, `..` stopping at the
//! root), never on the host. Text from the same sources that ends up in a
//! message goes through [`escape`], so control characters never reach a
//! terminal raw. Sizes, durations and dates from the same sources are
//! parsed by [`units`], with checked arithmetic; an image's users and groups
//! by [`accounts`]; image references by [`reference`]. The
//! user's directories (`XDG_*`) come from [`xdg`], the mount table from
//! [`mountinfo`]. Archives are written by
//! [`tar_writer`], the one deterministic tar writer; files that must appear
//! whole or not at all by [`atomic`].
//!
//! Every other crate of hoist may depend on this one; it depends on nothing of
//! ours.

pub mod accounts;
pub mod atomic;
pub mod compression;
pub mod fuzzing;
pub mod mountinfo;
pub mod proxy;
pub mod reference;
mod root;
pub mod tar_writer;
pub mod text;
pub mod units;
pub mod xdg;

pub use accounts::{Accounts, AccountsError};
pub use compression::Compression;
pub use reference::{Reference, ReferenceError};
pub use root::{fd_path, open_to_read, Error, Root};
pub use text::{escape, escape_bytes, escape_keep_lines, escape_path, Escaped};
