//! hoist-frontend: Dockerfile text → build graph.
#![warn(missing_docs)]

pub mod dockerignore;
pub mod error;
pub mod graph;
pub mod instructions;
mod json;
pub mod lower;
pub mod parser;
mod plan;
pub mod shell;

pub use error::{Error, ErrorKind};
pub use graph::BuildGraph;
pub use lower::{lower, BuildOptions, ImageResolver, NoResolver, ResolvedImage};
pub use parser::{dump_ast, parse, Ast, Node, ParseError};
