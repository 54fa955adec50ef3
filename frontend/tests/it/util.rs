//! Helpers shared by the integration tests.

use std::cell::RefCell;
use std::collections::BTreeMap;

use hoist_frontend::graph::{ImageConfig, Platform};
use hoist_frontend::{lower, parse, BuildGraph, BuildOptions, Error, ImageResolver, ResolvedImage};

/// A resolver serving canned configs and recording what was asked.
#[derive(Default)]
pub struct FakeResolver {
    pub images: BTreeMap<String, ImageConfig>,
    pub calls: RefCell<Vec<String>>,
}

impl FakeResolver {
    pub fn with(mut self, reference: &str, config: ImageConfig) -> Self {
        self.images.insert(reference.to_string(), config);
        self
    }
}

impl ImageResolver for FakeResolver {
    fn resolve(
        &self,
        reference: &str,
        _platform: &Platform,
    ) -> Result<Option<ResolvedImage>, Box<dyn std::error::Error + Send + Sync>> {
        self.calls.borrow_mut().push(reference.to_string());
        Ok(self.images.get(reference).map(|c| ResolvedImage {
            reference: format!("{reference}@sha256:{}", "0".repeat(64)),
            config: c.clone(),
            empty: false,
        }))
    }
}

pub fn opts() -> BuildOptions {
    BuildOptions {
        platform: Platform::parse("linux/amd64"),
        build_platform: Platform::parse("linux/amd64"),
        ..Default::default()
    }
}

pub fn build(src: &str) -> BuildGraph {
    build_with(src, &opts(), &FakeResolver::default())
}

pub fn build_with(src: &str, o: &BuildOptions, r: &dyn ImageResolver) -> BuildGraph {
    let ast = parse(src).unwrap_or_else(|e| panic!("parse: {}", e.render("Dockerfile")));
    lower(&ast, o, r).unwrap_or_else(|e| panic!("lower: {}", e.render("Dockerfile")))
}

pub fn build_err(src: &str) -> Error {
    build_err_with(src, &opts())
}

pub fn build_err_with(src: &str, o: &BuildOptions) -> Error {
    match parse(src) {
        Err(e) => e.into(),
        Ok(ast) => match lower(&ast, o, &FakeResolver::default()) {
            Ok(_) => panic!("expected an error for:\n{src}"),
            Err(e) => e,
        },
    }
}

pub fn history(g: &BuildGraph) -> Vec<String> {
    g.target_stage()
        .history
        .iter()
        .map(|h| h.created_by.clone())
        .collect()
}
