//! `--filter key=value` as Docker's listings take it: parsed against the keys a listing knows
//! (an unknown key or a value without `=` is the daemon's refusal: exit 1), values of one key
//! ORed, keys ANDed; `label` filters each must hold.

use std::collections::BTreeMap;

use crate::error::CliError;

/// The filters of one listing, by key.
#[derive(Debug, Default)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses `key=value` words; `known` are the keys this listing takes.
    pub fn parse(words: &[String], known: &[&str]) -> Result<Filters, CliError> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for w in words {
            let (k, v) = w.split_once('=').ok_or_else(|| {
                CliError::with_code(
                    1,
                    format!("bad format of filter (expected name=value): {w}"),
                )
            })?;
            if !known.contains(&k) {
                return Err(CliError::with_code(1, format!("invalid filter '{k}'")));
            }
            map.entry(k.to_string()).or_default().push(v.to_string());
        }
        Ok(Filters(map))
    }

    /// Whether `key`'s values (if any were given) accept the item: `test` true for one of them.
    pub fn any(&self, key: &str, test: impl Fn(&str) -> bool) -> bool {
        self.0.get(key).is_none_or(|vs| vs.iter().any(|v| test(v)))
    }

    /// The values of a boolean filter (`dangling=true`): `None` when not given; an error for a
    /// value that is not a boolean.
    pub fn boolean(&self, key: &str) -> Result<Option<bool>, CliError> {
        match self.0.get(key).and_then(|v| v.last()) {
            None => Ok(None),
            Some(v) => match v.as_str() {
                "true" | "1" => Ok(Some(true)),
                "false" | "0" => Ok(Some(false)),
                _ => Err(CliError::with_code(
                    1,
                    format!("invalid filter '{key}={v}': use true or false"),
                )),
            },
        }
    }

    /// Whether `labels` hold every `label=KEY` or `label=KEY=VALUE` given.
    pub fn labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0
            .get("label")
            .is_none_or(|vs| vs.iter().all(|f| has_label(labels, f)))
    }
}

/// Whether `labels` hold one `label=` filter's value: `KEY` (any value) or `KEY=VALUE`.
pub fn has_label(labels: &BTreeMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(filter),
    }
}

/// Go's `path.Match` for the patterns `reference=` filters use: `*` and `?` within one `/`
/// segment, `[...]` classes are taken literally.
pub fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len())
                .take_while(|i| *i == 0 || n[i - 1] != '/')
                .any(|i| go(&p[1..], &n[i..])),
            Some('?') => n.first().is_some_and(|c| *c != '/') && go(&p[1..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn keys_values_and_labels() {
        let f = Filters::parse(
            &words(&["name=a", "name=b", "label=x=1", "label=y"]),
            &["name", "label"],
        )
        .unwrap();
        assert!(f.any("name", |v| v == "b"));
        assert!(!f.any("name", |v| v == "c"));
        assert!(
            f.any("driver", |_| false),
            "a key not given accepts everything"
        );
        let l = BTreeMap::from([
            ("x".to_string(), "1".to_string()),
            ("y".into(), String::new()),
        ]);
        assert!(f.labels(&l));
        assert!(!f.labels(&BTreeMap::from([("x".to_string(), "2".to_string())])));
        assert_eq!(
            Filters::parse(&words(&["bogus=1"]), &["name"])
                .unwrap_err()
                .code,
            1
        );
        assert_eq!(
            Filters::parse(&words(&["name"]), &["name"])
                .unwrap_err()
                .code,
            1
        );
        let d = Filters::parse(&words(&["dangling=true"]), &["dangling"]).unwrap();
        assert_eq!(d.boolean("dangling").unwrap(), Some(true));
        let d = Filters::parse(&words(&["dangling=maybe"]), &["dangling"]).unwrap();
        assert!(d.boolean("dangling").is_err());
    }

    #[test]
    fn globs_as_go_path_match() {
        assert!(glob("mine", "mine"));
        assert!(glob("busy*", "busybox"));
        assert!(glob("*", "busybox"));
        assert!(!glob("*", "library/busybox"));
        assert!(glob("*/busybox", "library/busybox"));
        assert!(glob("b?sybox:*", "busybox:latest"));
        assert!(!glob("mine", "mine2"));
    }
}
