//! Image references as users type them: `name`, `name:tag`, `registry/ns/name:tag`,
//! `name@sha256:...`.

use std::fmt;

use crate::digest::Digest;

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Repository, e.g. `busybox` or `127.0.0.1:5000/library/busybox`.
    pub repository: String,
    /// Tag (`latest` when neither tag nor digest is given).
    pub tag: Option<String>,
    /// Digest, when pinned.
    pub digest: Option<Digest>,
}

/// A reference that cannot be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid reference format {0:?}: repository name must be lowercase letters, digits and separators (. _ - /), with an optional :tag"
)]
pub struct InvalidReference(pub String);

impl Reference {
    /// Parses a reference, defaulting the tag to `latest`.
    pub fn parse(s: &str) -> Result<Self, InvalidReference> {
        let bad = || InvalidReference(s.to_string());
        if s.is_empty() || s.len() > 512 {
            return Err(bad());
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d).map_err(|_| bad())?)),
            None => (s, None),
        };
        // A ':' after the last '/' separates the tag (a ':' before it is a registry port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if repository.is_empty()
            || repository.len() > 255
            || repository.starts_with('/')
            || repository.ends_with('/')
            || repository.contains("//")
        {
            return Err(bad());
        }
        let first = repository.split('/').next().unwrap_or("");
        let has_registry = repository.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost");
        for (i, component) in repository.split('/').enumerate() {
            let is_registry = i == 0 && has_registry;
            let ok = !component.is_empty()
                && component.bytes().all(|b| {
                    b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || matches!(b, b'.' | b'_' | b'-')
                        || (is_registry && (b == b':' || b.is_ascii_uppercase()))
                })
                && component != "."
                && component != "..";
            if !ok {
                return Err(bad());
            }
            if is_registry
                && let Some((_, port)) = component.split_once(':')
                && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(bad());
            }
        }
        if let Some(t) = tag
            && (t.is_empty()
                || t.len() > 128
                || t.starts_with(['.', '-'])
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')))
        {
            return Err(bad());
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(Self {
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// `repository:tag` (the key in the store's tag table), when tagged.
    pub fn tagged_name(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|t| format!("{}:{t}", self.repository))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(
            (r.repository.as_str(), r.tag.as_deref()),
            ("busybox", Some("latest"))
        );
        let r = Reference::parse("busybox:1.36").unwrap();
        assert_eq!(r.tag.as_deref(), Some("1.36"));
        let r = Reference::parse("127.0.0.1:5000/library/busybox:local").unwrap();
        assert_eq!(r.repository, "127.0.0.1:5000/library/busybox");
        assert_eq!(r.tag.as_deref(), Some("local"));
        let r = Reference::parse("localhost:5000/x").unwrap();
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let d = Digest::of(b"x");
        let r = Reference::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest, Some(d));
    }

    #[test]
    fn long_names_round_trip() {
        // Found by the fuzzer: a 250-byte name gained ":latest" and no longer parsed.
        let name = "a".repeat(250);
        let r = Reference::parse(&name).unwrap();
        assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
        assert!(Reference::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "Busybox",
            "a//b",
            "/a",
            "a/",
            "a:",
            "a:-x",
            "a/../b",
            "a@sha256:xyz",
            "a b",
            "a:b:c/d",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
