//! `import`: an image from a root filesystem tarball, as `docker import` makes one, with
//! `--change` instructions applied to its config.

use std::fs;
use std::io::{self, BufRead, BufReader, Read};

use crate::digest::{Digest, HashingReader};
use crate::image::{
    ContainerConfig, Descriptor, History, ImageConfig, MEDIA_TYPE_OCI_LAYER_TAR, Manifest, RootFs,
};
use crate::reference::Reference;
use crate::store::{ImageRecord, Store, StoreError};

/// Importing failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input is not a (possibly gzip-compressed) tar archive.
    #[error("{0}")]
    NotATar(String),
    /// A `--change` instruction is invalid.
    #[error("invalid --change {0:?}: {1}")]
    Change(String, String),
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the input failed.
    #[error("reading the archive: {0}")]
    Io(#[from] io::Error),
}

/// Applies one Dockerfile-style instruction (`CMD`, `ENTRYPOINT`, `ENV`, `WORKDIR`, `USER`,
/// `EXPOSE`, `LABEL`, `VOLUME`, `STOPSIGNAL`) to a config, as `docker import --change` does.
pub fn apply_change(cfg: &mut ContainerConfig, change: &str) -> Result<(), ImportError> {
    let bad = |why: &str| ImportError::Change(change.to_string(), why.to_string());
    let trimmed = change.trim();
    let (word, rest) = trimmed
        .split_once(char::is_whitespace)
        .map(|(w, r)| (w, r.trim()))
        .unwrap_or((trimmed, ""));
    let list = |rest: &str| -> Result<Vec<String>, ImportError> {
        if rest.starts_with('[') {
            serde_json::from_str::<Vec<String>>(rest)
                .map_err(|e| bad(&format!("bad JSON array: {e}")))
        } else if rest.is_empty() {
            Err(bad("missing argument"))
        } else {
            Ok(vec!["/bin/sh".into(), "-c".into(), rest.into()])
        }
    };
    match word.to_ascii_uppercase().as_str() {
        "CMD" => cfg.cmd = Some(list(rest)?),
        "ENTRYPOINT" => cfg.entrypoint = Some(list(rest)?),
        "WORKDIR" if !rest.is_empty() => cfg.working_dir = rest.to_string(),
        "USER" if !rest.is_empty() => cfg.user = rest.to_string(),
        "STOPSIGNAL" if !rest.is_empty() => cfg.stop_signal = rest.to_string(),
        "ENV" => {
            let pairs: Vec<(String, String)> = if let Some((k, v)) = rest.split_once('=') {
                if k.contains(char::is_whitespace) {
                    return Err(bad("ENV key contains whitespace"));
                }
                vec![(k.to_string(), v.trim_matches('"').to_string())]
            } else if let Some((k, v)) = rest.split_once(char::is_whitespace) {
                vec![(k.to_string(), v.trim().to_string())]
            } else {
                return Err(bad("ENV needs KEY=VALUE"));
            };
            let env = cfg.env.get_or_insert_with(Vec::new);
            for (k, v) in pairs {
                if k.is_empty() {
                    return Err(bad("empty ENV key"));
                }
                env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k.as_str()));
                env.push(format!("{k}={v}"));
            }
        }
        "EXPOSE" if !rest.is_empty() => {
            let ports = cfg.exposed_ports.get_or_insert_with(Default::default);
            for p in rest.split_whitespace() {
                let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                if num.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
                    return Err(bad("EXPOSE needs PORT[/tcp|udp]"));
                }
                ports.insert(format!("{num}/{proto}"), serde_json::json!({}));
            }
        }
        "VOLUME" if !rest.is_empty() => {
            let vols = if rest.starts_with('[') {
                list(rest)?
            } else {
                rest.split_whitespace().map(String::from).collect()
            };
            let map = cfg.volumes.get_or_insert_with(Default::default);
            for v in vols {
                map.insert(v, serde_json::json!({}));
            }
        }
        "LABEL" => {
            let (k, v) = rest
                .split_once('=')
                .ok_or_else(|| bad("LABEL needs KEY=VALUE"))?;
            cfg.labels
                .get_or_insert_with(Default::default)
                .insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
        }
        "" => return Err(bad("empty instruction")),
        w @ ("WORKDIR" | "USER" | "STOPSIGNAL" | "EXPOSE" | "VOLUME") => {
            return Err(bad(&format!("{w} needs an argument")));
        }
        other => {
            return Err(bad(&format!(
                "{other} is not supported (use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR or STOPSIGNAL)"
            )));
        }
    }
    Ok(())
}

/// Imports a root filesystem tarball (plain or gzip) read from `input` as a one-layer image.
pub fn import(
    store: &Store,
    input: &mut dyn Read,
    reference: Option<&Reference>,
    changes: &[String],
    message: Option<&str>,
    created: &str,
) -> Result<ImageRecord, ImportError> {
    let mut config = ContainerConfig::default();
    for c in changes {
        apply_change(&mut config, c)?;
    }
    let mut buffered = BufReader::new(input);
    let head = buffered.fill_buf()?;
    let gzip = head.len() >= 2 && head[..2] == [0x1f, 0x8b];
    let mut plain: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    // The layer is stored uncompressed, so its digest is also its diff ID.
    let mut hashing = HashingReader::new(&mut plain);
    let (digest, size) = store.put_blob_from(&mut hashing, None)?;
    drop(hashing);
    validate_tar(store, &digest)?;
    let image = ImageConfig {
        created: Some(created.to_string()),
        architecture: "amd64".into(),
        os: "linux".into(),
        config,
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![digest.clone()],
        },
        history: vec![History {
            created: Some(created.to_string()),
            created_by: Some("mvm import".into()),
            comment: message
                .map(String::from)
                .or_else(|| Some("Imported from tarball".into())),
            empty_layer: false,
        }],
        extra: Default::default(),
    };
    let config_bytes =
        serde_json::to_vec(&image).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let manifest = Manifest::oci(
        &config_bytes,
        vec![Descriptor {
            media_type: MEDIA_TYPE_OCI_LAYER_TAR.into(),
            digest,
            size,
            annotations: None,
        }],
    );
    let tags: Vec<String> = reference
        .and_then(Reference::tagged_name)
        .into_iter()
        .collect();
    let image = store.add_image(&manifest, &config_bytes, &tags)?;
    if tags.is_empty() {
        // Docker keeps an unnamed import as a `<none>` image.
        let _lock = store.lock()?;
        crate::catalog::keep_untagged(store, &image.manifest_digest)?;
    }
    Ok(image)
}

/// Reads every header of a stored layer so a non-tar input fails at import, not at run.
fn validate_tar(store: &Store, digest: &Digest) -> Result<(), ImportError> {
    let path = store.blob_path(digest);
    let f = fs::File::open(&path)?;
    let not_tar = |e: String| {
        let _ = fs::remove_file(&path);
        ImportError::NotATar(format!("the input is not a tar archive: {e}"))
    };
    let mut archive = tar::Archive::new(BufReader::new(f));
    let mut count = 0u64;
    for entry in archive.entries().map_err(|e| not_tar(e.to_string()))? {
        let entry = entry.map_err(|e| not_tar(e.to_string()))?;
        entry.path().map_err(|e| not_tar(e.to_string()))?;
        count += 1;
    }
    if count == 0 {
        return Err(not_tar("it has no entries".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply_like_docker() {
        let mut c = ContainerConfig::default();
        apply_change(&mut c, r#"CMD ["echo","hi"]"#).unwrap();
        assert_eq!(c.cmd, Some(vec!["echo".into(), "hi".into()]));
        apply_change(&mut c, "ENTRYPOINT echo a").unwrap();
        assert_eq!(
            c.entrypoint,
            Some(vec!["/bin/sh".into(), "-c".into(), "echo a".into()])
        );
        apply_change(&mut c, "ENV A=1").unwrap();
        apply_change(&mut c, "ENV A=2").unwrap();
        apply_change(&mut c, "ENV B hello world").unwrap();
        assert_eq!(c.env, Some(vec!["A=2".into(), "B=hello world".into()]));
        apply_change(&mut c, "WORKDIR /srv").unwrap();
        apply_change(&mut c, "USER 1000:1000").unwrap();
        apply_change(&mut c, "EXPOSE 80 53/udp").unwrap();
        assert!(c.exposed_ports.as_ref().unwrap().contains_key("53/udp"));
        for bad in ["RUN echo", "CMD [bad", "EXPOSE x", "WORKDIR", "", "ENV"] {
            assert!(apply_change(&mut c, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn import_stores_a_layer_and_tags_it() {
        let root = std::env::temp_dir().join(format!("mvm-import-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let store = Store::open(&root).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "hello", &b"hi"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let r = Reference::parse("test:one").unwrap();
        let img = import(
            &store,
            &mut &tar[..],
            Some(&r),
            &["CMD [\"sh\"]".into()],
            None,
            "2026-01-01T00:00:00Z",
        )
        .unwrap();
        assert_eq!(img.tags, vec!["test:one".to_string()]);
        assert_eq!(img.config.rootfs.diff_ids.len(), 1);
        assert_eq!(store.resolve("test:one").unwrap().id, img.id);
        assert_eq!(store.resolve(&img.id.hex()[..12]).unwrap().id, img.id);
        assert!(matches!(
            store.resolve("nope"),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.resolve("Bad Name"),
            Err(StoreError::Reference(_))
        ));
        // Not a tar: refused, nothing tagged.
        let err = import(
            &store,
            &mut &b"hello world, not a tar"[..],
            Some(&Reference::parse("x").unwrap()),
            &[],
            None,
            "t",
        )
        .unwrap_err();
        assert!(matches!(err, ImportError::NotATar(_)), "{err}");
        assert!(store.resolve("x").is_err());
        fs::remove_dir_all(&root).unwrap();
    }
}
