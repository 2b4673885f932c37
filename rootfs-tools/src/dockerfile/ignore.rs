//! `.dockerignore`: which files of the build context the build never sees, matched as
//! moby/patternmatcher does.

use super::pattern::Glob;

/// One line of a `.dockerignore`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// `!pattern`: re-includes what earlier rules excluded.
    exception: bool,
    /// The cleaned pattern, as compiled.
    pattern: String,
    glob: Glob,
}

/// A parsed `.dockerignore`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerIgnore {
    rules: Vec<Rule>,
}

/// Go's `path.Clean` for relative patterns and paths: no `.`, no empty elements, `..`
/// folded where it can be; a leading `/` is dropped, since the context root is both the
/// working directory and the root.
fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            _ => parts.push(part),
        }
    }
    if parts.is_empty() {
        return if rooted { "/".into() } else { ".".into() };
    }
    parts.join("/")
}

impl DockerIgnore {
    /// Parses a `.dockerignore`: `#` in the first column starts a comment, blank lines
    /// are skipped, each line is trimmed and cleaned, `!` marks an exception.
    pub fn parse(text: &str) -> DockerIgnore {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut rules = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let mut pattern = line.trim();
            if pattern.is_empty() {
                continue;
            }
            let exception = pattern.starts_with('!');
            if exception {
                pattern = pattern[1..].trim();
            }
            let pattern = if pattern.is_empty() {
                String::new()
            } else {
                clean(pattern)
            };
            rules.push(Rule {
                exception,
                glob: Glob::dockerignore(&pattern),
                pattern,
            });
        }
        DockerIgnore { rules }
    }

    /// Whether `rel_path` (relative to the context root, `/`-separated) is left out of
    /// the build context. A pattern matching a parent directory matches everything below
    /// it; the last matching line wins.
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        let path = clean(rel_path);
        let path: Vec<char> = path.chars().collect();
        // Prefixes of the path that are parent directories: "a", "a/b" for "a/b/c".
        let parents: Vec<usize> = path
            .iter()
            .enumerate()
            .filter(|&(_, &c)| c == '/')
            .map(|(i, _)| i)
            .collect();
        let mut excluded = false;
        for rule in &self.rules {
            // An exception can only change an excluded path, and an exclusion an included one.
            if rule.exception != excluded {
                continue;
            }
            let hit = rule.glob.matches(&path)
                || parents.iter().any(|&end| rule.glob.matches(&path[..end]));
            if hit {
                excluded = !rule.exception;
            }
        }
        excluded
    }

    /// The patterns as cleaned, `!` kept: for logging and for the build cache key.
    pub fn patterns(&self) -> Vec<String> {
        self.rules
            .iter()
            .map(|r| {
                if r.exception {
                    format!("!{}", r.pattern)
                } else {
                    r.pattern.clone()
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_docs_examples() {
        let ig = DockerIgnore::parse("# comment\n*/temp*\n*/*/temp*\ntemp?\n");
        assert!(ig.is_excluded("somedir/temporary.txt"));
        assert!(ig.is_excluded("somedir/temp"));
        assert!(ig.is_excluded("somedir/subdir/temporary.txt"));
        assert!(ig.is_excluded("tempa"));
        assert!(!ig.is_excluded("temp"));
        assert!(!ig.is_excluded("temporary.txt"));
        assert!(!ig.is_excluded("# comment"));

        let ig = DockerIgnore::parse("*.md\n!README*.md\nREADME-secret.md\n");
        assert!(ig.is_excluded("CHANGES.md"));
        assert!(!ig.is_excluded("README.md"));
        assert!(ig.is_excluded("README-secret.md"));

        let ig = DockerIgnore::parse("*.md\nREADME-secret.md\n!README*.md\n");
        assert!(!ig.is_excluded("README-secret.md"));
    }

    #[test]
    fn double_star_and_exceptions() {
        let ig = DockerIgnore::parse("**/*.go\n!keep.go\n");
        assert!(ig.is_excluded("main.go"));
        assert!(ig.is_excluded("a/b/c.go"));
        assert!(!ig.is_excluded("keep.go"));
        // `keep.go` only names the root file.
        assert!(ig.is_excluded("sub/keep.go"));
        assert!(!ig.is_excluded("main.rs"));

        let ig = DockerIgnore::parse("*.go\n!keep.go");
        assert!(ig.is_excluded("main.go"));
        assert!(!ig.is_excluded("keep.go"));
        // `*` does not cross directories.
        assert!(!ig.is_excluded("sub/main.go"));
    }

    #[test]
    fn directories_and_leading_slashes() {
        let ig = DockerIgnore::parse("dir/\n/abs\n./dot/x\n  spaced  \n\n");
        assert_eq!(ig.patterns(), vec!["dir", "abs", "dot/x", "spaced"]);
        assert!(ig.is_excluded("dir"));
        assert!(ig.is_excluded("dir/a/b.txt"));
        assert!(!ig.is_excluded("dirt"));
        assert!(ig.is_excluded("abs"));
        assert!(ig.is_excluded("/abs/file"));
        assert!(!ig.is_excluded("x/abs"));
        assert!(ig.is_excluded("./dot/x/y"));
        assert!(ig.is_excluded("spaced"));
    }

    #[test]
    fn exception_below_an_excluded_directory() {
        let ig = DockerIgnore::parse("build\n!build/keep\n");
        assert!(ig.is_excluded("build/out.o"));
        assert!(!ig.is_excluded("build/keep"));
        assert!(!ig.is_excluded("build/keep/file"));
    }

    #[test]
    fn exclude_all_but() {
        let ig = DockerIgnore::parse("*\n!src\n!Cargo.toml\n");
        assert!(ig.is_excluded("target"));
        assert!(ig.is_excluded("target/debug/x"));
        assert!(!ig.is_excluded("src/main.rs"));
        assert!(!ig.is_excluded("Cargo.toml"));
    }

    #[test]
    fn comments_only_in_the_first_column() {
        let ig = DockerIgnore::parse("\u{feff}#x\n #y\n");
        assert!(!ig.is_excluded("x"));
        assert!(ig.is_excluded("#y"));
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean("a/./b/../c/"), "a/c");
        assert_eq!(clean("../a"), "../a");
        assert_eq!(clean("/../a"), "a");
        assert_eq!(clean("./"), ".");
    }
}
