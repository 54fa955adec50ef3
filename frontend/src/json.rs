//! A strict JSON reader for exec-form arrays.
//!
//! Exec form must decide exactly as Go's `encoding/json` does whether a line is
//! valid JSON (then non-strings are an error) or not (then it is shell form), so
//! the grammar is checked here in full, including what Go does with lone
//! surrogate escapes (they become U+FFFD instead of failing).

/// Parses `text` as one JSON array (surrounding JSON whitespace allowed).
/// Elements that are strings come back as `Some`, other values as `None`.
pub(crate) fn parse_array(text: &str) -> Result<Vec<Option<String>>, ()> {
    let mut p = Reader {
        s: text.as_bytes(),
        i: 0,
        depth: 0,
    };
    p.ws();
    if p.peek() != Some(b'[') {
        return Err(());
    }
    p.i += 1;
    p.depth += 1;
    let mut out = Vec::new();
    p.ws();
    if p.peek() == Some(b']') {
        p.i += 1;
    } else {
        loop {
            p.ws();
            if p.peek() == Some(b'"') {
                out.push(Some(p.string()?));
            } else {
                p.value()?;
                out.push(None);
            }
            p.ws();
            match p.next() {
                Some(b',') => continue,
                Some(b']') => break,
                _ => return Err(()),
            }
        }
    }
    p.ws();
    if p.i != p.s.len() {
        return Err(());
    }
    Ok(out)
}

struct Reader<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn next(&mut self) -> Option<u8> {
        let c = self.peek();
        if c.is_some() {
            self.i += 1;
        }
        c
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }
    fn lit(&mut self, word: &[u8]) -> Result<(), ()> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(())
        }
    }
    /// Validates one value without recursion (an explicit stack of open
    /// containers), so deep nesting cannot overflow the stack. Go's decoder
    /// gives up beyond 10,000 levels, which makes the line shell form.
    fn value(&mut self) -> Result<(), ()> {
        // true: inside an object (keys expected), false: inside an array.
        let mut stack: Vec<bool> = Vec::new();
        loop {
            // Parse one value start.
            self.ws();
            match self.peek().ok_or(())? {
                b'"' => {
                    self.string()?;
                }
                b't' => self.lit(b"true")?,
                b'f' => self.lit(b"false")?,
                b'n' => self.lit(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                b'[' => {
                    self.i += 1;
                    if self.depth + stack.len() + 1 > 10_000 {
                        return Err(());
                    }
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.i += 1;
                    } else {
                        stack.push(false);
                        continue;
                    }
                }
                b'{' => {
                    self.i += 1;
                    if self.depth + stack.len() + 1 > 10_000 {
                        return Err(());
                    }
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                    } else {
                        stack.push(true);
                        self.key()?;
                        continue;
                    }
                }
                _ => return Err(()),
            }
            // After a complete value: close containers or move to the next element.
            loop {
                let Some(&in_object) = stack.last() else {
                    return Ok(());
                };
                self.ws();
                match (self.next(), in_object) {
                    (Some(b','), true) => {
                        self.key()?;
                        break;
                    }
                    (Some(b','), false) => break,
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        stack.pop();
                    }
                    _ => return Err(()),
                }
            }
        }
    }
    /// `"key" :` inside an object.
    fn key(&mut self) -> Result<(), ()> {
        self.ws();
        if self.peek() != Some(b'"') {
            return Err(());
        }
        self.string()?;
        self.ws();
        if self.next() != Some(b':') {
            return Err(());
        }
        Ok(())
    }
    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }
    fn number(&mut self) -> Result<(), ()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(()),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(());
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(());
            }
        }
        Ok(())
    }
    fn hex4(&mut self) -> Result<u32, ()> {
        let h = self.s.get(self.i..self.i + 4).ok_or(())?;
        let h = std::str::from_utf8(h).map_err(|_| ())?;
        if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(());
        }
        self.i += 4;
        u32::from_str_radix(h, 16).map_err(|_| ())
    }
    fn string(&mut self) -> Result<String, ()> {
        self.i += 1; // opening quote
        let mut out = Vec::new();
        loop {
            let c = self.next().ok_or(())?;
            match c {
                b'"' => break,
                b'\\' => match self.next().ok_or(())? {
                    b'"' => out.push(b'"'),
                    b'\\' => out.push(b'\\'),
                    b'/' => out.push(b'/'),
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'u' => {
                        let mut cp = self.hex4()?;
                        if (0xD800..0xDC00).contains(&cp) {
                            // A pair only when a low surrogate escape follows.
                            let save = self.i;
                            if self.s.get(self.i..self.i + 2) == Some(b"\\u") {
                                self.i += 2;
                                match self.hex4() {
                                    Ok(lo) if (0xDC00..0xE000).contains(&lo) => {
                                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                                    }
                                    _ => {
                                        self.i = save;
                                        cp = 0xFFFD;
                                    }
                                }
                            } else {
                                cp = 0xFFFD;
                            }
                        } else if (0xDC00..0xE000).contains(&cp) {
                            cp = 0xFFFD;
                        }
                        let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    }
                    _ => return Err(()),
                },
                0..=0x1f => return Err(()),
                other => out.push(other),
            }
        }
        // The input was a &str and escapes produce valid UTF-8.
        String::from_utf8(out).map_err(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_array;

    #[test]
    fn arrays() {
        assert_eq!(parse_array("[]"), Ok(vec![]));
        assert_eq!(
            parse_array(" [ \"a\" , \"b\\u00e9\" ] "),
            Ok(vec![Some("a".into()), Some("bé".into())])
        );
        assert_eq!(parse_array("[1, {\"a\":[null]}]"), Ok(vec![None, None]));
        assert_eq!(
            parse_array("[{\"a\": {\"b\": [1, 2, {}]}, \"c\": true}, []]"),
            Ok(vec![None, None])
        );
        assert!(parse_array("[{\"a\" 1}]").is_err());
        assert!(parse_array("[{1: 2}]").is_err());
        assert!(parse_array("[[1,]]").is_err());
        assert!(parse_array("[{\"a\":1,}]").is_err());
        // Nesting: fine within Go's limit, not JSON beyond it, never a stack overflow.
        let deep = |n: usize| format!("[{}{}]", "[".repeat(n), "]".repeat(n));
        assert_eq!(parse_array(&deep(9_000)), Ok(vec![None]));
        assert!(parse_array(&deep(20_000)).is_err());
        assert!(parse_array("[\"a\"] x").is_err());
        assert!(parse_array("['a']").is_err());
        assert!(parse_array("[\"a\",]").is_err());
        assert_eq!(
            parse_array("[\"\\ud800x\"]"),
            Ok(vec![Some("\u{FFFD}x".into())])
        );
        assert_eq!(
            parse_array("[\"\\ud83d\\ude00\"]"),
            Ok(vec![Some("\u{1F600}".into())])
        );
    }
}
