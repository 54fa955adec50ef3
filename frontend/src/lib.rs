//! hoist-frontend: Dockerfile text → build graph.
#![warn(missing_docs)]

pub mod error;
mod json;
pub mod parser;
pub mod shell;

pub use parser::{dump_ast, parse, Ast, Node, ParseError};
