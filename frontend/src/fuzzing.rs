//! The bodies of the fuzz targets in `frontend/fuzz` (cargo-fuzz), shared
//! with the test that replays their corpora in `cargo test`
//! (`tests/it/fuzz_corpus.rs`): a crash found by the fuzzer and saved to the
//! corpus fails `cargo test` too.

use crate::shell::{Lexer, LexerOptions};
use crate::{lower as lower_ast, parse as parse_text, BuildOptions, NoResolver};

/// Parsing any text must not panic; a parsed file must dump and an error
/// must render.
pub fn parse(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        match parse_text(text) {
            Ok(ast) => {
                let _ = crate::dump_ast(&ast);
            }
            Err(e) => {
                let _ = e.render("Dockerfile");
            }
        }
    }
}

/// Word expansion of any word, in every lexer mode and with both escape
/// characters, must not panic.
pub fn expand(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = vec![
        ("A".to_string(), "a b/c.d".to_string()),
        ("EMPTY".to_string(), String::new()),
    ];
    for bits in 0u8..32 {
        let opts = LexerOptions {
            raw_quotes: bits & 1 != 0,
            raw_escapes: bits & 2 != 0,
            skip_process_quotes: bits & 4 != 0,
            skip_unset_env: bits & 8 != 0,
            heredoc_words: bits & 16 != 0,
        };
        for escape in ['\\', '`'] {
            let _ = Lexer::new(escape, opts).process(text, &env);
        }
    }
}

/// Lowering any parsable Dockerfile must not panic, nor rendering its plan.
pub fn lower(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(ast) = parse_text(text) {
            if let Ok(graph) = lower_ast(&ast, &BuildOptions::default(), &NoResolver) {
                let _ = graph.render_plan();
            }
        }
    }
}
