//! From text to logical lines: parser directives at the top, comments, and line
//! continuations, following BuildKit's `parser.Parse`.

use super::ParseError;

/// The parser directives found at the top of a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// The escape character: `\` (default) or `` ` ``.
    pub escape: char,
    /// `# syntax=`: recorded, never acted on (we have one frontend, this one).
    pub syntax: Option<String>,
    /// `# check=`: recorded, never acted on.
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            escape: '\\',
            syntax: None,
            check: None,
        }
    }
}

/// One instruction's text with its continuations joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogicalLine {
    /// 1-based line where it starts.
    pub line: usize,
    pub text: String,
}

/// Reads `# name=value` at the very top. The first line that is not a known directive
/// (a blank line, a comment, an unknown directive, an instruction) ends them.
struct DirectiveParser {
    done: bool,
}

impl DirectiveParser {
    fn feed(&mut self, d: &mut Directives, line: &str, lineno: usize) -> Result<(), ParseError> {
        if self.done {
            return Ok(());
        }
        let Some((key, value)) = parse_directive(line) else {
            self.done = true;
            return Ok(());
        };
        let slot = match key.as_str() {
            "escape" => None,
            "syntax" => Some(&mut d.syntax),
            "check" => Some(&mut d.check),
            _ => {
                self.done = true;
                return Ok(());
            }
        };
        let dup = || {
            ParseError::at(
                lineno,
                format!("only one {key} parser directive can be used"),
            )
        };
        match slot {
            Some(slot) => {
                if slot.is_some() {
                    return Err(dup());
                }
                *slot = Some(value);
            }
            None => {
                if d.escape != '\0' {
                    return Err(dup());
                }
                d.escape = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(ParseError::at(
                            lineno,
                            format!("invalid escape token '{value}' does not match ` or \\"),
                        ));
                    }
                };
            }
        }
        Ok(())
    }
}

/// `^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*$`, name lowercased.
fn parse_directive(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix('#')?.trim_start_matches([' ', '\t']);
    let name_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if name_len == 0 {
        return None;
    }
    let (name, rest) = rest.split_at(name_len);
    let value = rest
        .trim_start_matches([' ', '\t'])
        .strip_prefix('=')?
        .trim_matches([' ', '\t']);
    if value.is_empty() {
        return None;
    }
    Some((name.to_ascii_lowercase(), value.to_string()))
}

fn trim_leading_ws(s: &str) -> &str {
    s.trim_start_matches([' ', '\t'])
}

fn is_comment(raw: &str) -> bool {
    trim_leading_ws(raw).starts_with('#')
}

/// Strips a trailing escape character (optionally followed by blanks) and says whether
/// the line continues.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    match t.strip_suffix(escape) {
        Some(s) => (s, true),
        None => (line, false),
    }
}

/// Splits a Dockerfile into its directives and logical lines.
pub(crate) fn split(text: &str) -> Result<(Directives, Vec<LogicalLine>), ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // '\0' marks "escape not set yet" so a duplicate can be told from the default.
    let mut d = Directives {
        escape: '\0',
        ..Directives::default()
    };
    let mut dp = DirectiveParser { done: false };
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((lineno, raw)) = lines.next() {
        let stripped = trim_leading_ws(raw);
        dp.feed(&mut d, stripped, lineno)?;
        if is_comment(raw) {
            continue;
        }
        let escape = if d.escape == '\0' { '\\' } else { d.escape };
        let (first, mut continues) = trim_continuation(stripped, escape);
        if !continues && first.trim().is_empty() {
            continue;
        }
        let mut joined = first.to_string();
        while continues {
            let Some((_, raw)) = lines.next() else { break };
            // Comments and blank lines inside a continuation are dropped, as Docker does.
            if is_comment(raw) || trim_leading_ws(raw).is_empty() {
                continue;
            }
            let (part, more) = trim_continuation(raw, escape);
            joined.push_str(part);
            continues = more;
        }
        if joined.trim().is_empty() {
            continue;
        }
        out.push(LogicalLine {
            line: lineno,
            text: joined,
        });
    }
    if d.escape == '\0' {
        d.escape = '\\';
    }
    Ok((d, out))
}
