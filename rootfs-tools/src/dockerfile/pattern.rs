//! Glob patterns, in the two dialects Docker uses: `.dockerignore` patterns (Go's
//! `filepath.Match` plus `**`, as moby/patternmatcher compiles them) and the shell
//! patterns of `${var#pattern}` and friends. Matching is a dynamic programme, so no
//! pattern can make it take exponential time.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `?`: one character; `no_slash` excludes `/`.
    One {
        no_slash: bool,
    },
    /// `*`: any run of characters; `no_slash` excludes `/`.
    Star {
        no_slash: bool,
    },
    /// `**/` (or `**` mid-pattern): nothing, or anything ending in `/`.
    DirStar,
    /// `[...]`.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled pattern; matches whole strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    toks: Vec<Tok>,
}

/// Parses `[...]` starting after the `[`; returns the token and the characters used, or
/// `None` when there is no closing `]` (the `[` is then a literal).
fn class(chars: &[char], escape: char) -> Option<(Tok, usize)> {
    let mut i = 0;
    let negated = matches!(chars.first(), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let mut c = *chars.get(i)?;
        if c == ']' && !first {
            return Some((Tok::Class { negated, ranges }, i + 1));
        }
        first = false;
        if c == escape {
            i += 1;
            c = *chars.get(i)?;
        }
        i += 1;
        let mut hi = c;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&n| n != ']') {
            hi = *chars.get(i + 1)?;
            i += 2;
            if hi == escape {
                hi = *chars.get(i)?;
                i += 1;
            }
        }
        ranges.push((c, hi));
    }
}

impl Glob {
    /// A `.dockerignore` pattern (already cleaned): `*` and `?` stop at `/`, `**` crosses
    /// directories, `\` escapes.
    pub(crate) fn dockerignore(pattern: &str) -> Glob {
        let chars: Vec<char> = pattern.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' if chars.get(i) == Some(&'*') => {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    if i == chars.len() {
                        toks.push(Tok::Star { no_slash: false });
                    } else {
                        toks.push(Tok::DirStar);
                    }
                }
                '*' => toks.push(Tok::Star { no_slash: true }),
                '?' => toks.push(Tok::One { no_slash: true }),
                '\\' => match chars.get(i) {
                    Some(&n) => {
                        toks.push(Tok::Lit(n));
                        i += 1;
                    }
                    None => toks.push(Tok::Lit('\\')),
                },
                '[' => match class(&chars[i..], '\\') {
                    Some((tok, used)) => {
                        toks.push(tok);
                        i += used;
                    }
                    None => toks.push(Tok::Lit('[')),
                },
                c => toks.push(Tok::Lit(c)),
            }
        }
        Glob { toks }
    }

    /// A shell pattern as in `${var%pattern}`: `*` and `?` match any character, the
    /// escape character quotes the next one.
    pub(crate) fn shell(pattern: &str, escape: char) -> Glob {
        let chars: Vec<char> = pattern.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' => toks.push(Tok::Star { no_slash: false }),
                '?' => toks.push(Tok::One { no_slash: false }),
                '[' => match class(&chars[i..], escape) {
                    Some((tok, used)) => {
                        toks.push(tok);
                        i += used;
                    }
                    None => toks.push(Tok::Lit('[')),
                },
                c if c == escape => match chars.get(i) {
                    Some(&n) => {
                        toks.push(Tok::Lit(n));
                        i += 1;
                    }
                    None => toks.push(Tok::Lit(c)),
                },
                c => toks.push(Tok::Lit(c)),
            }
        }
        Glob { toks }
    }

    /// Whether the pattern matches all of `text`.
    pub(crate) fn matches(&self, text: &[char]) -> bool {
        let n = text.len();
        // next[j]: toks[i+1..] matches text[j..]; cur[j]: toks[i..] matches text[j..].
        let mut next = vec![false; n + 1];
        next[n] = true;
        let mut cur = vec![false; n + 1];
        for tok in self.toks.iter().rev() {
            // For DirStar: some k >= j has text[k] == '/' and next[k + 1].
            let mut slash_then_rest = false;
            for j in (0..=n).rev() {
                let c = text.get(j).copied();
                cur[j] = match tok {
                    Tok::Lit(l) => c == Some(*l) && next[j + 1],
                    Tok::One { no_slash } => {
                        c.is_some_and(|c| !(*no_slash && c == '/')) && next[j + 1]
                    }
                    Tok::Class { negated, ranges } => {
                        c.is_some_and(|c| {
                            ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
                        }) && next[j + 1]
                    }
                    Tok::Star { no_slash } => {
                        next[j] || (c.is_some_and(|c| !(*no_slash && c == '/')) && cur[j + 1])
                    }
                    Tok::DirStar => {
                        if c == Some('/') && next[j + 1] {
                            slash_then_rest = true;
                        }
                        next[j] || slash_then_rest
                    }
                };
            }
            std::mem::swap(&mut cur, &mut next);
        }
        next[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(g: &Glob, s: &str) -> bool {
        g.matches(&s.chars().collect::<Vec<_>>())
    }

    #[test]
    fn dockerignore_dialect() {
        let g = Glob::dockerignore("**/*.go");
        assert!(m(&g, "a.go") && m(&g, "x/y/a.go"));
        assert!(!m(&g, "a.goo"));
        let g = Glob::dockerignore("a/**/b");
        assert!(m(&g, "a/b") && m(&g, "a/x/y/b"));
        assert!(!m(&g, "a/xb"));
        let g = Glob::dockerignore("*/temp*");
        assert!(m(&g, "somedir/temporary.txt"));
        assert!(!m(&g, "a/b/temp"));
        assert!(m(&Glob::dockerignore("temp?"), "tempa"));
        assert!(!m(&Glob::dockerignore("temp?"), "temp/"));
        assert!(m(&Glob::dockerignore("[a-c]x"), "bx"));
        assert!(m(&Glob::dockerignore("[^a-c]x"), "dx"));
        assert!(!m(&Glob::dockerignore("[!a-c]x"), "ax"));
        assert!(m(&Glob::dockerignore(r"\*"), "*"));
        assert!(!m(&Glob::dockerignore(r"\*"), "a"));
        assert!(m(&Glob::dockerignore("a["), "a["));
        assert!(m(&Glob::dockerignore("foo/**"), "foo/a/b"));
        assert!(m(&Glob::dockerignore("[]]"), "]"));
    }

    #[test]
    fn shell_dialect() {
        let g = Glob::shell("f*b", '\\');
        assert!(m(&g, "foob") && m(&g, "f/b"));
        assert!(m(&Glob::shell("\\*", '\\'), "*"));
        assert!(m(&Glob::shell("`*", '`'), "*"));
        assert!(!m(&Glob::shell("`*", '`'), "x"));
    }

    #[test]
    fn many_stars_stay_fast() {
        let g = Glob::shell(&"*a".repeat(200), '\\');
        assert!(!m(&g, &"a".repeat(199)));
    }
}
