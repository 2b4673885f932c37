//! Docker's environment replacement (BuildKit's `shell.Lex.ProcessWord`): quotes removed,
//! escapes applied, `$VAR` and `${VAR...}` substituted.

use super::ParseError;
use super::pattern::Glob;

/// Nesting limit for `${a:-${b:-...}}`, so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// Expands one word as Docker does for `ENV`, `ARG`, `COPY`, `FROM`... arguments.
///
/// Supported: `$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR-word}`, `${VAR:+word}`,
/// `${VAR+word}`, `${VAR:?msg}`, `${VAR?msg}`, `${VAR#pat}`, `${VAR##pat}`, `${VAR%pat}`,
/// `${VAR%%pat}`, `${VAR/pat/repl}`, `${VAR//pat/repl}`; single quotes (taken literally),
/// double quotes (variables still expanded), the escape character before any character
/// (`\$HOME` is `$HOME`). An unset variable expands to nothing; anything else after the
/// name is "unsupported modifier".
pub fn expand(
    word: &str,
    vars: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<String, ParseError> {
    let mut lx = Lexer {
        chars: word.chars().collect(),
        pos: 0,
        escape,
        vars,
        depth: 0,
    };
    lx.word(&[], false)
        .map(|(s, _)| s)
        .map_err(|message| ParseError::Expand {
            word: word.to_string(),
            message,
        })
}

const MISSING_BRACE: &str = "syntax error: missing '}'";

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    vars: &'a dyn Fn(&str) -> Option<String>,
    depth: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Reads up to (and consuming) one of `stops`, or to the end when `stops` is empty.
    /// Returns the text and the stop character met. `raw_escapes` keeps escape characters
    /// for a pattern to interpret.
    fn word(
        &mut self,
        stops: &[char],
        raw_escapes: bool,
    ) -> Result<(String, Option<char>), String> {
        let mut out = String::new();
        while let Some(ch) = self.peek() {
            if stops.contains(&ch) {
                self.next();
                return Ok((out, Some(ch)));
            }
            match ch {
                '\'' => out.push_str(&self.single_quoted()?),
                '"' => out.push_str(&self.double_quoted(raw_escapes)?),
                '$' => out.push_str(&self.dollar()?),
                _ => {
                    self.next();
                    if ch == self.escape {
                        if raw_escapes {
                            out.push(ch);
                        }
                        match self.next() {
                            Some(c) => out.push(c),
                            None => break,
                        }
                    } else {
                        out.push(ch);
                    }
                }
            }
        }
        Ok((out, None))
    }

    fn single_quoted(&mut self) -> Result<String, String> {
        self.next();
        let mut out = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    );
                }
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quoted(&mut self, raw_escapes: bool) -> Result<String, String> {
        self.next();
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    );
                }
                Some('"') => {
                    self.next();
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(c) => {
                    self.next();
                    if c == self.escape {
                        if raw_escapes {
                            out.push(c);
                        }
                        match self.peek() {
                            None => continue,
                            // Only these can be escaped inside double quotes.
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.next();
                                out.push(n);
                            }
                            Some(_) => out.push(c),
                        }
                    } else {
                        out.push(c);
                    }
                }
            }
        }
    }

    /// A variable name: letters, digits and `_`; or a run of digits; or one special
    /// parameter character, as BuildKit's `processName`.
    fn name(&mut self) -> String {
        let mut name = String::new();
        match self.peek() {
            Some(c) if c.is_ascii_digit() => {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            Some(c) if "@*#?-$!".contains(c) => {
                self.next();
                name.push(c);
                return name;
            }
            _ => {}
        }
        while let Some(c) = self.peek().filter(|c| c.is_alphanumeric() || *c == '_') {
            name.push(c);
            self.next();
        }
        name
    }

    fn dollar(&mut self) -> Result<String, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("substitutions nested too deeply".into());
        }
        let r = self.dollar_inner();
        self.depth -= 1;
        r
    }

    fn dollar_inner(&mut self) -> Result<String, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok((self.vars)(&name).unwrap_or_default());
        }
        self.next();
        match self.peek() {
            None => return Err(MISSING_BRACE.into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.name();
        let Some(ch) = self.next() else {
            return Err(MISSING_BRACE.into());
        };
        match ch {
            '}' => Ok((self.vars)(&name).unwrap_or_default()),
            '/' => self.replace(&name),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let (null_is_unset, op) = if ch == ':' {
                    (true, self.next().ok_or(MISSING_BRACE)?)
                } else {
                    (false, ch)
                };
                let shown = if null_is_unset {
                    format!(":{op}")
                } else {
                    op.to_string()
                };
                let pattern_op = op == '#' || op == '%';
                if !matches!(op, '+' | '-' | '?' | '#' | '%') || (null_is_unset && pattern_op) {
                    return Err(format!("unsupported modifier ({shown}) in substitution"));
                }
                let (word, stop) = self.word(&['}'], pattern_op)?;
                if stop.is_none() {
                    return Err(MISSING_BRACE.into());
                }
                let value = (self.vars)(&name);
                let set = value
                    .as_deref()
                    .is_some_and(|v| !(null_is_unset && v.is_empty()));
                match op {
                    '-' => Ok(if set { value.unwrap_or_default() } else { word }),
                    '+' => Ok(if set { word } else { String::new() }),
                    '?' if set => Ok(value.unwrap_or_default()),
                    '?' if word.is_empty() => Err(format!("{name}: is not allowed to be unset")),
                    '?' => Err(format!("{name}: {word}")),
                    _ => {
                        let longest = word.starts_with(op);
                        let pattern = if longest {
                            &word[op.len_utf8()..]
                        } else {
                            &word[..]
                        };
                        let value: Vec<char> = value.unwrap_or_default().chars().collect();
                        let glob = Glob::shell(pattern, self.escape);
                        Ok(if op == '#' {
                            trim_prefix(&glob, &value, longest)
                        } else {
                            trim_suffix(&glob, &value, longest)
                        })
                    }
                }
            }
            _ => Err(format!("unsupported modifier ({ch}) in substitution")),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}` (after the first
    /// `/`); a missing replacement (`${name/pattern}`) deletes, as in the shell.
    fn replace(&mut self, name: &str) -> Result<String, String> {
        let all = self.peek() == Some('/');
        if all {
            self.next();
        }
        let (pattern, stop) = self.word(&['/', '}'], true)?;
        let replacement = match stop {
            None => return Err(MISSING_BRACE.into()),
            Some('}') => String::new(),
            Some(_) => match self.word(&['}'], false)? {
                (r, Some(_)) => r,
                (_, None) => return Err(MISSING_BRACE.into()),
            },
        };
        let value: Vec<char> = (self.vars)(name).unwrap_or_default().chars().collect();
        if pattern.is_empty() {
            return Ok(value.into_iter().collect());
        }
        let glob = Glob::shell(&pattern, self.escape);
        let mut out = String::new();
        let mut i = 0;
        while i < value.len() {
            match (i + 1..=value.len())
                .rev()
                .find(|&e| glob.matches(&value[i..e]))
            {
                Some(end) => {
                    out.push_str(&replacement);
                    i = end;
                    if !all {
                        out.extend(&value[i..]);
                        return Ok(out);
                    }
                }
                None => {
                    out.push(value[i]);
                    i += 1;
                }
            }
        }
        Ok(out)
    }
}

fn trim_prefix(glob: &Glob, value: &[char], longest: bool) -> String {
    let mut ends: Box<dyn Iterator<Item = usize>> = if longest {
        Box::new((0..=value.len()).rev())
    } else {
        Box::new(0..=value.len())
    };
    match ends.find(|&k| glob.matches(&value[..k])) {
        Some(k) => value[k..].iter().collect(),
        None => value.iter().collect(),
    }
}

fn trim_suffix(glob: &Glob, value: &[char], longest: bool) -> String {
    let mut starts: Box<dyn Iterator<Item = usize>> = if longest {
        Box::new(0..=value.len())
    } else {
        Box::new((0..=value.len()).rev())
    };
    match starts.find(|&k| glob.matches(&value[k..])) {
        Some(k) => value[..k].iter().collect(),
        None => value.iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "foo" => Some("/bar".into()),
            "empty" => Some(String::new()),
            "str" => Some("foobarbaz".into()),
            "v" => Some("v1.7.13".into()),
            _ => None,
        }
    }

    fn ok(word: &str) -> String {
        expand(word, &vars, '\\').unwrap_or_else(|e| panic!("{word}: {e}"))
    }

    fn err(word: &str) -> String {
        match expand(word, &vars, '\\') {
            Err(ParseError::Expand { message, .. }) => message,
            other => panic!("{word}: {other:?}"),
        }
    }

    #[test]
    fn docker_reference_examples() {
        assert_eq!(ok("${foo}"), "/bar");
        assert_eq!(ok("$foo"), "/bar");
        assert_eq!(ok("${foo}_bar"), "/bar_bar");
        assert_eq!(ok("$foo_bar"), "");
        assert_eq!(ok(r"\$foo"), "$foo");
        assert_eq!(ok(r"\${foo}"), "${foo}");
        assert_eq!(ok("${nope:-word}"), "word");
        assert_eq!(ok("${foo:-word}"), "/bar");
        assert_eq!(ok("${empty:-word}"), "word");
        assert_eq!(ok("${empty-word}"), "");
        assert_eq!(ok("${nope-word}"), "word");
        assert_eq!(ok("${foo:+word}"), "word");
        assert_eq!(ok("${empty:+word}"), "");
        assert_eq!(ok("${empty+word}"), "word");
        assert_eq!(ok("${nope+word}"), "");
        assert_eq!(ok("${nope:-$foo/x}"), "/bar/x");
        assert_eq!(ok("${nope:-${foo}}"), "/bar");
        assert_eq!(ok("${str#f*b}"), "arbaz");
        assert_eq!(ok("${str##f*b}"), "az");
        assert_eq!(ok("${str%b*}"), "foobar");
        assert_eq!(ok("${str%%b*}"), "foo");
        assert_eq!(ok("${str/ba/fo}"), "fooforbaz");
        assert_eq!(ok("${str//ba/fo}"), "fooforfoz");
        assert_eq!(ok("${v#v}"), "1.7.13");
        assert_eq!(ok("${str/ba}"), "foorbaz");
        assert_eq!(ok("${foo?}"), "/bar");
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(ok("'$foo'"), "$foo");
        assert_eq!(ok("\"$foo\""), "/bar");
        assert_eq!(ok(r#""a\"b\$c\\d\e""#), "a\"b$c\\d\\e");
        assert_eq!(ok(r"a\ b"), "a b");
        assert_eq!(ok("a\\"), "a");
        assert_eq!(ok("$"), "$");
        assert_eq!(ok("a$ b"), "a$ b");
        assert_eq!(ok("$1x"), "x");
        assert_eq!(ok("no vars"), "no vars");
        assert_eq!(expand("`$foo", &vars, '`').unwrap(), "$foo");
        assert_eq!(expand(r"\$foo", &vars, '`').unwrap(), r"\/bar");
    }

    #[test]
    fn bad_words() {
        assert_eq!(err("${foo"), "syntax error: missing '}'");
        assert_eq!(err("${foo:-x"), "syntax error: missing '}'");
        assert_eq!(err("${"), "syntax error: missing '}'");
        assert_eq!(err("${}"), "syntax error: bad substitution");
        assert_eq!(err("${:-x}"), "syntax error: bad substitution");
        assert_eq!(err("${foo:x}"), "unsupported modifier (:x) in substitution");
        assert_eq!(
            err("${foo:#x}"),
            "unsupported modifier (:#) in substitution"
        );
        assert_eq!(err("${foo^^}"), "unsupported modifier (^) in substitution");
        assert_eq!(err("${nope?}"), "nope: is not allowed to be unset");
        assert_eq!(err("${empty:?must be set}"), "empty: must be set");
        assert_eq!(
            err("'abc"),
            "unexpected end of statement while looking for matching single-quote"
        );
        assert_eq!(
            err("\"abc"),
            "unexpected end of statement while looking for matching double-quote"
        );
        let deep = format!("{}x{}", "${a:-".repeat(100), "}".repeat(100));
        assert_eq!(err(&deep), "substitutions nested too deeply");
        let e = expand("${", &vars, '\\').unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to process \"${\": syntax error: missing '}'"
        );
        assert_eq!(
            e.with_line(7).to_string(),
            "Dockerfile:7: failed to process \"${\": syntax error: missing '}'"
        );
    }
}
