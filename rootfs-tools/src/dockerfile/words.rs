//! Splitting instruction arguments the way BuildKit's parser does: leading `--flags`,
//! quote-aware words (quotes kept for `expand`), JSON arrays, whitespace lists.

/// Splits on whitespace outside quotes, keeping quotes and escapes in the words: they are
/// removed later by `expand`, as Docker's `ProcessWord` does (BuildKit's `parseWords`).
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut quote: Option<char> = None;
    let mut chars = rest.chars().peekable();
    while let Some(ch) = chars.next() {
        match quote {
            None => {
                if ch.is_whitespace() {
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    match chars.next() {
                        // An escape at the very end is dropped.
                        None => continue,
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
            Some(q) => {
                if ch == q {
                    quote = None;
                }
                // Nothing can be escaped inside single quotes.
                if ch == escape && q != '\'' {
                    match chars.next() {
                        None => {
                            quote = None;
                            continue;
                        }
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
        }
    }
    if blank_ok || !word.is_empty() {
        words.push(word);
    }
    words
}

/// Takes the leading `--name[=value]` words off an instruction's arguments (quotes and
/// backslashes inside them processed, a lone `--` ends them), as BuildKit's
/// `extractBuilderFlags`. Returns the flags and the rest of the line.
pub(crate) fn extract_flags(line: &str) -> (Vec<String>, &str) {
    let mut flags = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut quote: Option<char> = None;
    let mut in_word = false;
    let mut iter = line.char_indices().peekable();
    while let Some((pos, ch)) = iter.next() {
        if !in_word {
            if ch.is_whitespace() {
                continue;
            }
            if !line[pos..].starts_with("--") {
                return (flags, &line[pos..]);
            }
            in_word = true;
        }
        match quote {
            None => {
                if ch.is_whitespace() {
                    in_word = false;
                    if word == "--" {
                        return (flags, &line[pos..]);
                    }
                    if blank_ok || !word.is_empty() {
                        flags.push(std::mem::take(&mut word));
                    }
                    word.clear();
                    blank_ok = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    blank_ok = true;
                    continue;
                }
                if ch == '\\' {
                    match iter.next() {
                        None => continue,
                        Some((_, next)) => word.push(next),
                    }
                    continue;
                }
                word.push(ch);
            }
            Some(q) => {
                if ch == q {
                    quote = None;
                    continue;
                }
                if ch == '\\' {
                    match iter.next() {
                        None => {
                            quote = None;
                            continue;
                        }
                        Some((_, next)) => word.push(next),
                    }
                    continue;
                }
                word.push(ch);
            }
        }
    }
    if in_word && word != "--" && (blank_ok || !word.is_empty()) {
        flags.push(word);
    }
    (flags, "")
}

/// The outcome of trying the JSON (exec) form.
pub(crate) enum Json {
    /// A JSON array of strings.
    Array(Vec<String>),
    /// Not a JSON array: the caller falls back to the shell form, as Docker does.
    NotArray,
    /// A JSON array with something other than strings in it: an error in Docker.
    NotStrings,
}

pub(crate) fn parse_json(rest: &str) -> Json {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Json::NotArray;
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(rest) {
        Err(_) => Json::NotArray,
        Ok(values) => {
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                match v {
                    serde_json::Value::String(s) => out.push(s),
                    _ => return Json::NotStrings,
                }
            }
            Json::Array(out)
        }
    }
}

/// Whitespace-separated words, quotes not special (BuildKit's
/// `parseStringsWhitespaceDelimited`).
pub(crate) fn whitespace_list(rest: &str) -> Vec<String> {
    rest.split_whitespace().map(str::to_string).collect()
}

/// The `--name[=value]` flags an instruction accepts, checked like BuildKit's `BFlags`.
pub(crate) struct Flags {
    values: Vec<(String, Option<String>)>,
}

/// What kind of value a flag takes.
#[derive(Clone, Copy)]
pub(crate) enum FlagKind {
    Bool,
    String,
}

impl Flags {
    /// Parses `raw` against the accepted `(name, kind)` list; errors are one line.
    pub(crate) fn parse(raw: &[String], accepted: &[(&str, FlagKind)]) -> Result<Self, String> {
        let mut values: Vec<(String, Option<String>)> = Vec::new();
        for arg in raw {
            let Some(arg) = arg.strip_prefix("--") else {
                return Err(format!("arguments must start with --: {arg}"));
            };
            let (name, value) = match arg.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (arg, None),
            };
            let Some(&(_, kind)) = accepted.iter().find(|(n, _)| *n == name) else {
                return Err(format!("unknown flag: --{name}"));
            };
            if values.iter().any(|(n, _)| n == name) {
                return Err(format!("duplicate flag specified: --{name}"));
            }
            let value = match kind {
                FlagKind::String => match value {
                    Some(v) => v.to_string(),
                    None => return Err(format!("missing a value on flag: --{name}")),
                },
                FlagKind::Bool => match value.map(str::to_ascii_lowercase).as_deref() {
                    None | Some("true") => "true".to_string(),
                    Some("false") => "false".to_string(),
                    Some(_) => {
                        return Err(format!(
                            "expecting boolean value for flag --{name}, not: {}",
                            value.unwrap_or_default()
                        ));
                    }
                },
            };
            values.push((name.to_string(), Some(value)));
        }
        Ok(Flags { values })
    }

    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
    }

    pub(crate) fn bool(&self, name: &str) -> bool {
        self.string(name).as_deref() == Some("true")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(
            parse_words(r#"A=1 B="x y" C='a b' D=e\ f "#, '\\'),
            vec!["A=1", "B=\"x y\"", "C='a b'", "D=e\\ f"]
        );
        assert_eq!(parse_words("\"\"", '\\'), vec!["\"\""]);
        assert_eq!(parse_words("  ", '\\'), Vec::<String>::new());
        assert_eq!(parse_words("a`\"b c\"", '`'), vec!["a`\"b", "c\""]);
    }

    #[test]
    fn flags_are_taken_off_the_front() {
        let (f, rest) = extract_flags("--from=build --chown=\"a b\" src dst");
        assert_eq!(f, vec!["--from=build", "--chown=a b"]);
        assert_eq!(rest, "src dst");
        let (f, rest) = extract_flags("-- --notaflag x");
        assert!(f.is_empty());
        assert_eq!(rest, " --notaflag x");
        let (f, rest) = extract_flags("--link");
        assert_eq!(f, vec!["--link"]);
        assert_eq!(rest, "");
    }

    #[test]
    fn flag_checks() {
        let acc = [("from", FlagKind::String), ("link", FlagKind::Bool)];
        let f = Flags::parse(&["--from=a".into(), "--link".into()], &acc).unwrap();
        assert_eq!(f.string("from").as_deref(), Some("a"));
        assert!(f.bool("link"));
        let err = |raw: &[&str]| {
            let raw: Vec<String> = raw.iter().map(|s| s.to_string()).collect();
            Flags::parse(&raw, &acc).err().unwrap()
        };
        assert_eq!(err(&["--nope"]), "unknown flag: --nope");
        assert_eq!(err(&["--from"]), "missing a value on flag: --from");
        assert_eq!(
            err(&["--link=maybe"]),
            "expecting boolean value for flag --link, not: maybe"
        );
        assert_eq!(
            err(&["--from=a", "--from=b"]),
            "duplicate flag specified: --from"
        );
    }

    #[test]
    fn json_forms() {
        assert!(matches!(parse_json(r#" ["a", "b c"] "#), Json::Array(v) if v == ["a", "b c"]));
        assert!(matches!(parse_json("[\"a\""), Json::NotArray));
        assert!(matches!(parse_json("[1]"), Json::NotStrings));
        assert!(matches!(parse_json("echo [x]"), Json::NotArray));
    }
}
