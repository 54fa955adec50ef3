//! Heredoc detection and bodies, case by case as BuildKit treats them.

use hoist_frontend::parse;

/// (name, content, expand, chomp, fd) of the heredocs of each instruction.
type Doc = (&'static str, &'static str, bool, bool, u32);

#[test]
fn heredoc_forms() {
    let src = "FROM alpine:3.6\n\
ENV NAME=me\n\
USER <<INVALID\n\
INVALID\n\
RUN <<EMPTY\n\
EMPTY\n\
RUN 3<<EMPTY2\n\
EMPTY2\n\
RUN \"<<NOHEREDOC\"\n\
RUN <<INDENT\n\tfoo\n\tbar\nINDENT\n\
RUN <<-UNINDENT\n\tbaz\n\tquux\n\tUNINDENT\n\
RUN <<-'NOEXPAND'\n\tdon't expand $NAME\nNOEXPAND\n\
RUN <<COMMENT\n# internal comment\necho hello # trailing\nCOMMENT\n\
RUN --mount=type=cache,target=/foo <<MOUNT\necho hello\nMOUNT\n\
COPY <<FILE1 <<FILE2 /dest\ncontent 1\nFILE1\ncontent 2\nFILE2\n\
COPY <<X <<Y /dest\nY\nX\nX\nY\n\
RUN <<COMPLEX python3\nprint('hello world')\nCOMPLEX\n\
RUN <<eo'f'\necho foo\neof\n\
RUN <<eo\\'f\necho foo\neo'f\n\
RUN <<'e'o\\'f\necho foo\neo'f\n\
RUN <<'one two'\necho bar\none two\n\
RUN <<$EOF\n$EOF\n\
RUN <<  EOF\nEOF\n\
RUN <<  EOF  > foo\nEOF\n\
RUN << -EOF\n-EOF\n\
RUN [\"<<EOF\"]\n\
ONBUILD RUN <<EOF\nx\nEOF\n";
    let want: Vec<Vec<Doc>> = vec![
        vec![], // ENV
        vec![], // USER <<INVALID: not a heredoc instruction
        vec![], // INVALID
        vec![("EMPTY", "", true, false, 0)],
        vec![("EMPTY2", "", true, false, 3)],
        vec![],
        vec![("INDENT", "\tfoo\n\tbar\n", true, false, 0)],
        vec![("UNINDENT", "\tbaz\n\tquux\n", true, true, 0)],
        vec![("NOEXPAND", "\tdon't expand $NAME\n", false, true, 0)],
        vec![(
            "COMMENT",
            "# internal comment\necho hello # trailing\n",
            true,
            false,
            0,
        )],
        vec![("MOUNT", "echo hello\n", true, false, 0)],
        vec![
            ("FILE1", "content 1\n", true, false, 0),
            ("FILE2", "content 2\n", true, false, 0),
        ],
        vec![("X", "Y\n", true, false, 0), ("Y", "X\n", true, false, 0)],
        vec![("COMPLEX", "print('hello world')\n", true, false, 0)],
        vec![("eof", "echo foo\n", false, false, 0)],
        vec![("eo'f", "echo foo\n", true, false, 0)],
        vec![("eo'f", "echo foo\n", false, false, 0)],
        vec![("one two", "echo bar\n", false, false, 0)],
        vec![("$EOF", "", true, false, 0)],
        vec![("EOF", "", true, false, 0)],
        vec![("EOF", "", true, false, 0)],
        vec![("-EOF", "", true, false, 0)],
        vec![],
        vec![("EOF", "x\n", true, false, 0)],
    ];
    let ast = parse(src).unwrap();
    assert_eq!(ast.nodes.len(), want.len() + 1);
    for (i, w) in want.iter().enumerate() {
        let node = &ast.nodes[i + 1];
        let got: Vec<Doc> = node
            .heredocs
            .iter()
            .map(|h| {
                (
                    // Leak is fine in a test: compare as &'static str tuples.
                    &*Box::leak(h.name.clone().into_boxed_str()),
                    &*Box::leak(h.content.clone().into_boxed_str()),
                    h.expand,
                    h.chomp,
                    h.file_descriptor,
                )
            })
            .collect();
        assert_eq!(&got, w, "instruction {}: {}", i + 1, node.original);
    }
}

#[test]
fn heredoc_lines_and_following_instruction() {
    let ast = parse("FROM a\nRUN <<EOF\nline\nEOF\nRUN after\n").unwrap();
    assert_eq!(
        (ast.nodes[1].span.start.line, ast.nodes[1].span.end.line),
        (2, 4)
    );
    assert_eq!(ast.nodes[2].span.start.line, 5);
    // CRLF line endings: the terminator still matches, the body keeps its endings.
    let ast = parse("FROM a\r\nRUN <<EOF\r\nline\r\nEOF\r\n").unwrap();
    assert_eq!(ast.nodes[1].heredocs[0].content, "line\r\n");
}
