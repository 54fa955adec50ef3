#![no_main]
//! Word expansion of any word, in every lexer mode, must not panic.

use hoist_frontend::shell::{Lexer, LexerOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
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
});
