//! A registry client per the OCI distribution spec: `pull`, `push` and `login`.
//!
//! oci-client does the HTTP: the `/v2/` challenge, bearer tokens (anonymous or from basic
//! credentials), basic auth, chunked uploads with a monolithic fallback, and HEAD for blobs.
//! Around it, code of our own where it falls short for an image store:
//! - manifests are fetched raw and kept byte for byte, so the stored manifest digest is the
//!   registry's (its `pull_image_manifest` re-serialises), and index resolution checks the
//!   digest of every manifest it follows;
//! - blobs stream into the store through our own hashing writer, so a blob is renamed into
//!   place only after its sha256 matched the descriptor (a registry that sends other bytes
//!   leaves nothing behind), and several layers download at once on one thread;
//! - plain HTTP is chosen per registry (loopback, `MVM_INSECURE_REGISTRIES`), since
//!   `ClientProtocol::HttpsExcept` only matches exact strings.

pub mod credentials;
pub mod name;
mod progress;
mod pull;
mod push;

use std::path::{Path, PathBuf};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;

pub use name::{RemoteName, canonical, familiar, remote_name};
pub use pull::pull;
pub use push::{PushReport, push};

use crate::store::StoreError;

/// Docker's schema 2 manifest.
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's manifest list.
pub const MEDIA_TYPE_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image index.
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker's image config.
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker's gzip layer.
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// zstd-compressed OCI layer.
pub const MEDIA_TYPE_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Registry errors; each displays as one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry has no such manifest.
    #[error("manifest for {0} not found: manifest unknown")]
    NotFound(String),
    /// Access denied.
    #[error("pull access denied for {0}, repository does not exist or may require 'mvm login'")]
    Denied(String),
    /// Push denied.
    #[error("push to {0} denied: authentication required (use 'mvm login')")]
    PushDenied(String),
    /// Login failed.
    #[error("login to {0} failed: {1}")]
    Login(String, String),
    /// Content did not match its digest.
    #[error(
        "{what} {expected}: content has digest {actual} (corrupt or tampered with); nothing was stored"
    )]
    DigestMismatch {
        /// `layer`, `config`, `manifest`.
        what: &'static str,
        /// The digest asked for.
        expected: String,
        /// The digest received.
        actual: String,
    },
    /// A manifest, index or media type mvm cannot use.
    #[error("{0}")]
    Unsupported(String),
    /// Talking to the registry failed.
    #[error("registry {registry}: {message}")]
    Http {
        /// Which registry.
        registry: String,
        /// The error, as one line.
        message: String,
    },
    /// The image store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A local file (credentials, blob) could not be read or written.
    #[error("{0}")]
    Io(String),
}

/// How to reach registries and what to show.
#[derive(Clone, Debug, Default)]
pub struct PullOptions {
    /// The credentials file (Docker's `config.json`); none: anonymous only.
    pub credentials: Option<PathBuf>,
    /// Where an older mvm kept credentials (`<state root>/auth.json`), read when the
    /// credentials file has none for the registry.
    pub legacy: Option<PathBuf>,
    /// Draw progress bars on stderr (only sensible when it is a terminal).
    pub progress: bool,
}

impl PullOptions {
    /// Options for the state root `root`: its credentials, and progress when stderr is a
    /// terminal.
    pub fn for_root(root: &Path) -> Self {
        use std::io::IsTerminal;
        Self {
            credentials: Some(credentials_path(root)),
            legacy: Some(legacy_credentials_path(root)),
            progress: std::io::stderr().is_terminal(),
        }
    }
}

/// Where `mvm login` keeps credentials: Docker's config file (shared with `docker login`),
/// or under the state root when no home is known.
pub fn credentials_path(root: &Path) -> PathBuf {
    credentials::docker_config_file().unwrap_or_else(|| legacy_credentials_path(root))
}

/// Where mvm kept credentials before it shared Docker's file; still read.
pub fn legacy_credentials_path(root: &Path) -> PathBuf {
    root.join("auth.json")
}

/// The current_thread runtime oci-client runs on.
fn runtime() -> Result<tokio::runtime::Runtime, RegistryError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RegistryError::Io(format!("start the async runtime: {e}")))
}

fn client(registry: &str) -> oci_client::Client {
    let protocol = if name::is_insecure(registry) {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    oci_client::Client::new(ClientConfig {
        protocol,
        platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
        connect_timeout: Some(std::time::Duration::from_secs(30)),
        user_agent: concat!("mvm/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    })
}

fn auth_for(opts: &PullOptions, registry: &str) -> Result<RegistryAuth, RegistryError> {
    let Some(path) = &opts.credentials else {
        return Ok(RegistryAuth::Anonymous);
    };
    let found = credentials::lookup(path, registry).and_then(|found| match (found, &opts.legacy) {
        (None, Some(old)) if old != path => credentials::lookup(old, registry),
        (found, _) => Ok(found),
    });
    match found {
        Ok(Some((u, p))) => Ok(RegistryAuth::Basic(u, p)),
        Ok(None) => Ok(RegistryAuth::Anonymous),
        Err(e) => Err(RegistryError::Io(e.to_string())),
    }
}

fn oci_reference(
    remote: &RemoteName,
    tag: Option<&str>,
    digest: Option<&str>,
) -> oci_client::Reference {
    match (tag, digest) {
        (_, Some(d)) => oci_client::Reference::with_digest(
            remote.registry.clone(),
            remote.path.clone(),
            d.to_string(),
        ),
        (Some(t), None) => oci_client::Reference::with_tag(
            remote.registry.clone(),
            remote.path.clone(),
            t.to_string(),
        ),
        (None, None) => oci_client::Reference::with_tag(
            remote.registry.clone(),
            remote.path.clone(),
            "latest".into(),
        ),
    }
}

/// One line for an error from oci-client, including the causes reqwest hides in its chain.
fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s.replace('\n', " ")
}

/// Maps an oci-client error for `what` (the image reference) to ours.
fn map_err(e: OciDistributionError, registry: &str, what: &str, push: bool) -> RegistryError {
    use oci_client::errors::OciErrorCode;
    match &e {
        OciDistributionError::ImageManifestNotFoundError(_) => RegistryError::NotFound(what.into()),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown))
            {
                RegistryError::NotFound(what.into())
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                if push {
                    RegistryError::PushDenied(what.into())
                } else {
                    RegistryError::Denied(what.into())
                }
            } else {
                RegistryError::Http {
                    registry: registry.into(),
                    message: one_line(&e),
                }
            }
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => {
            if push {
                RegistryError::PushDenied(what.into())
            } else {
                RegistryError::Denied(what.into())
            }
        }
        OciDistributionError::DigestError(d) => RegistryError::Unsupported(format!("{what}: {d}")),
        _ => RegistryError::Http {
            registry: registry.into(),
            message: one_line(&e),
        },
    }
}

/// Checks credentials against `registry` and saves them in `credentials_file` (mode 0600).
pub fn login(
    credentials_file: &Path,
    registry: &str,
    user: &str,
    password: &str,
) -> Result<(), RegistryError> {
    let registry = if registry == "index.docker.io" || registry.is_empty() {
        name::DEFAULT_REGISTRY
    } else {
        registry
    };
    let rt = runtime()?;
    let client = client(registry);
    // Any repository will do: the token service proves the credentials when it hands out a
    // token; a registry with plain basic auth checks them on the next request.
    let reference = oci_reference(
        &RemoteName {
            registry: registry.into(),
            path: "library/hello-world".into(),
        },
        Some("latest"),
        None,
    );
    let auth = RegistryAuth::Basic(user.into(), password.into());
    rt.block_on(client.auth(&reference, &auth, oci_client::RegistryOperation::Pull))
        .map_err(|e| RegistryError::Login(registry.into(), one_line(&e)))?;
    credentials::store(credentials_file, registry, user, password)
        .map_err(|e| RegistryError::Io(format!("save credentials: {e}")))
}

/// Forgets the credentials for `registry`; false when none were saved.
pub fn logout(credentials_file: &Path, registry: &str) -> Result<bool, RegistryError> {
    let registry = if registry == "index.docker.io" || registry.is_empty() {
        name::DEFAULT_REGISTRY
    } else {
        registry
    };
    credentials::remove(credentials_file, registry)
        .map_err(|e| RegistryError::Io(format!("remove credentials: {e}")))
}
