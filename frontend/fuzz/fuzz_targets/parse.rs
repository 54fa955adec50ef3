#![no_main]
//! Parsing any text must not panic; a parsed file must dump and re-render errors.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match hoist_frontend::parse(text) {
            Ok(ast) => {
                let _ = hoist_frontend::dump_ast(&ast);
            }
            Err(e) => {
                let _ = e.render("Dockerfile");
            }
        }
    }
});
