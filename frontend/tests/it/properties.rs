//! Property tests: no input panics, and what we print we read back.

use hoist_frontend::dockerignore::Matcher;
use hoist_frontend::shell::{Lexer, LexerOptions};
use hoist_frontend::{dump_ast, lower, parse, BuildOptions, NoResolver};
use proptest::prelude::*;

fn dockerfileish() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("FROM alpine AS a".to_string()),
        Just("FROM a".to_string()),
        Just("RUN echo hi \\".to_string()),
        Just("  && echo more".to_string()),
        Just("COPY --from=a /x /y".to_string()),
        Just("COPY --from=1 /x /y".to_string()),
        Just("COPY --from=b /x /y".to_string()),
        Just("FROM a AS b".to_string()),
        Just("FROM b".to_string()),
        Just("RUN --mount=type=bind,from=a,target=/m true".to_string()),
        Just("RUN --mount=\"from=b ,target=/m\" x".to_string()),
        Just("RUN --mount=type=cache,from=0,target=m y".to_string()),
        Just("ONBUILD COPY --from=a /p /q".to_string()),
        Just("RUN <<EOF".to_string()),
        Just("EOF".to_string()),
        Just("ARG X=${Y:-z}".to_string()),
        Just("ENV A=$X B=\"c d\"".to_string()),
        Just("ONBUILD RUN x".to_string()),
        Just("# escape=`".to_string()),
        Just("WORKDIR rel".to_string()),
        Just("EXPOSE 80/udp 1-3".to_string()),
        Just("HEALTHCHECK --interval=1s CMD true".to_string()),
        "[ -~]{0,30}",
    ];
    prop::collection::vec(line, 0..20).prop_map(|l| l.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn parse_and_lower_never_panic(src in "\\PC{0,200}") {
        if let Ok(ast) = parse(&src) {
            let _ = dump_ast(&ast);
            let _ = lower(&ast, &BuildOptions::default(), &NoResolver);
        }
    }

    #[test]
    fn structured_dockerfiles_never_panic(src in dockerfileish()) {
        if let Ok(ast) = parse(&src) {
            let _ = dump_ast(&ast);
            if let Ok(g) = lower(&ast, &BuildOptions::default(), &NoResolver) {
                for (i, v) in g.vertices.iter().enumerate() {
                    prop_assert!(v.inputs.iter().all(|&x| x < i));
                }
                let _ = g.render_plan();
            }
        }
    }

    #[test]
    fn expansion_never_panics(word in "\\PC{0,60}", raw in any::<bool>(), skip in any::<bool>()) {
        let env = vec![("A".to_string(), "x y".to_string())];
        let lex = Lexer::new('\\', LexerOptions { raw_quotes: raw, raw_escapes: raw, skip_unset_env: skip, ..Default::default() });
        let _ = lex.process(&word, &env);
    }

    /// Exec-form arguments survive JSON encoding, parsing and dumping.
    #[test]
    fn exec_form_round_trips(args in prop::collection::vec("\\PC{0,20}", 1..5)) {
        let json = serde_json::to_string(&args).unwrap();
        let ast = parse(&format!("CMD {json}\n")).unwrap();
        prop_assert_eq!(&ast.nodes[0].args, &args);
        prop_assert!(ast.nodes[0].json);
        let quoted: Vec<String> = args.iter().map(|a| hoist_frontend::parser::go_quote(a)).collect();
        prop_assert_eq!(dump_ast(&ast), format!("(cmd {})\n", quoted.join(" ")));
    }

    /// Single-quoted text is taken literally by the expander.
    #[test]
    fn single_quotes_are_literal(s in "[^']{0,40}") {
        let lex = Lexer::new('\\', LexerOptions::default());
        prop_assert_eq!(lex.process_word(&format!("'{s}'"), &Vec::<(String, String)>::new()).unwrap(), s);
    }

    /// A literal path pattern excludes the path and everything below it, nothing else.
    #[test]
    fn literal_patterns_match_path_and_children(dir in "[a-z]{1,8}", child in "[a-z]{1,8}", other in "[a-z]{1,8}") {
        let m = Matcher::parse(&format!("{dir}\n")).unwrap();
        prop_assert!(m.is_excluded(&dir));
        let below = format!("{dir}/{child}");
        prop_assert!(m.is_excluded(&below));
        prop_assume!(other != dir);
        let elsewhere = format!("{other}/{dir}");
        prop_assert!(!m.is_excluded(&elsewhere));
        let re = Matcher::parse(&format!("{dir}\n!{dir}/{child}\n")).unwrap();
        prop_assert!(!re.is_excluded(&below));
    }
}
