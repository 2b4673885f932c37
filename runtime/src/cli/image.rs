//! The image commands: `pull`, `push`, `login`, `logout`, `images`, `tag`, `rmi`, `history`,
//! `image inspect`, `save`, `load` and `image prune`, printed as Docker prints them.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use mvm_rootfs::archive::{self, SaveItem};
use mvm_rootfs::registry::{self, PullOptions};
use mvm_rootfs::{ImageRecord, Reference, Store, StoreError, catalog};
use serde_json::Value;

use crate::error::CliError;
use crate::output;
use crate::output::filter::{Filters, glob};
use crate::output::table::{Headers, print_formatted};
use crate::output::time::parse_rfc3339;
use crate::output::units::{human_size, human_size_with_precision};

fn open_store(root: &Path) -> Result<Store, CliError> {
    Store::open(&root.join("images")).map_err(CliError::runtime)
}

/// `mvm image ...`.
#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// List images.
    #[command(visible_alias = "list")]
    Ls(ImagesArgs),
    /// Display detailed information on one or more images.
    Inspect(InspectArgs),
    /// Remove one or more images.
    Rm(RmiArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag(TagArgs),
    /// Download an image from a registry.
    Pull(PullArgs),
    /// Upload an image to a registry.
    Push(PushArgs),
    /// Show the history of an image.
    History(HistoryArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default).
    Save(SaveArgs),
    /// Load an image from a tar archive or STDIN.
    Load(LoadArgs),
    /// Remove unused images.
    Prune(PruneArgs),
    /// Import the contents from a tarball to create a filesystem image.
    Import(ImportArgs),
}

/// `mvm image SUBCOMMAND`.
pub fn image(root: &Path, cmd: &ImageCommand) -> Result<i32, CliError> {
    match cmd {
        ImageCommand::Ls(a) => images(root, a),
        ImageCommand::Inspect(a) => inspect(root, &a.images, a.format.as_deref()),
        ImageCommand::Rm(a) => rmi(root, a),
        ImageCommand::Tag(a) => tag(root, a),
        ImageCommand::Pull(a) => pull(root, a),
        ImageCommand::Push(a) => push(root, a),
        ImageCommand::History(a) => history(root, a),
        ImageCommand::Save(a) => save(root, a),
        ImageCommand::Load(a) => load(root, a),
        ImageCommand::Prune(a) => prune(root, a),
        ImageCommand::Import(a) => import(root, a),
    }
}

// ---------------------------------------------------------------------------------------------
// pull, push, login, logout

/// `pull` arguments.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// Suppress verbose output.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// NAME[:TAG|@DIGEST]
    name: String,
}

/// `mvm pull`.
pub fn pull(root: &Path, args: &PullArgs) -> Result<i32, CliError> {
    let reference = Reference::parse(&args.name).map_err(CliError::runtime)?;
    let store = open_store(root)?;
    let explicit_tag = args
        .name
        .rsplit('/')
        .next()
        .is_some_and(|l| l.contains(':'));
    if !args.quiet && reference.digest.is_none() && !explicit_tag {
        println!("Using default tag: latest");
    }
    let before = catalog::resolve(&store, &reference.to_string()).ok();
    let mut opts = PullOptions::for_root(root);
    opts.progress &= !args.quiet;
    let image = registry::pull(&store, &reference, &opts).map_err(CliError::runtime)?;
    let canonical = registry::canonical(&reference.repository);
    let suffix = match (&reference.digest, &reference.tag) {
        (Some(d), _) => format!("@{d}"),
        (None, Some(t)) => format!(":{t}"),
        (None, None) => String::new(),
    };
    if !args.quiet {
        let shown = format!("{}{suffix}", registry::familiar(&reference.repository));
        let repo_digest = catalog::repo_digests_of(
            &catalog::repo_digests(&store).map_err(CliError::runtime)?,
            &image.manifest_digest,
        )
        .into_iter()
        .find_map(|rd| {
            rd.strip_prefix(&format!("{}@", registry::familiar(&reference.repository)))
                .map(str::to_string)
        })
        .unwrap_or_else(|| image.manifest_digest.to_string());
        println!("Digest: {repo_digest}");
        if before.is_some_and(|b| b.manifest_digest == image.manifest_digest) {
            println!("Status: Image is up to date for {shown}");
        } else {
            println!("Status: Downloaded newer image for {shown}");
        }
    }
    println!("{canonical}{suffix}");
    let name = format!("{}{suffix}", registry::familiar(&reference.repository));
    image_event(root, "pull", &name, &name);
    Ok(0)
}

/// An image event, as Docker records them (`name` the reference the command used).
fn image_event(root: &Path, action: &str, id: &str, name: &str) {
    mvm_engine::events::record(root, "image", action, id, &[("name", name)]);
}

/// `push` arguments.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// Suppress verbose output.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// NAME[:TAG]
    name: String,
}

/// `mvm push`.
pub fn push(root: &Path, args: &PushArgs) -> Result<i32, CliError> {
    let reference = Reference::parse(&args.name).map_err(CliError::runtime)?;
    let store = open_store(root)?;
    let report = registry::push(&store, &reference, &PullOptions::for_root(root))
        .map_err(CliError::runtime)?;
    if args.quiet {
        println!("{}:{}", report.repository, report.tag);
        return Ok(0);
    }
    println!("The push refers to repository [{}]", report.repository);
    for (d, existed) in &report.blobs {
        let what = if *existed {
            "Layer already exists"
        } else {
            "Pushed"
        };
        println!("{}: {what}", d.short());
    }
    println!(
        "{}: digest: {} size: {}",
        report.tag, report.digest, report.size
    );
    Ok(0)
}

/// `login` arguments.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Username.
    #[arg(short = 'u', long)]
    username: Option<String>,
    /// Password (prefer --password-stdin).
    #[arg(short = 'p', long)]
    password: Option<String>,
    /// Take the password from stdin.
    #[arg(long = "password-stdin")]
    password_stdin: bool,
    /// Registry (docker.io when omitted).
    registry: Option<String>,
}

/// `mvm login`.
pub fn login(root: &Path, args: &LoginArgs) -> Result<i32, CliError> {
    let registry = args
        .registry
        .as_deref()
        .unwrap_or(registry::name::DEFAULT_REGISTRY);
    if args.password_stdin && args.password.is_some() {
        return Err(CliError::usage(
            "--password and --password-stdin are mutually exclusive".into(),
        ));
    }
    if args.password_stdin && args.username.is_none() {
        return Err(CliError::usage(
            "Must provide --username with --password-stdin".into(),
        ));
    }
    let user = match &args.username {
        Some(u) => u.clone(),
        None => crate::output::prompt::read_line("Username: ")?,
    };
    let password = if args.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::runtime(format!("read stdin: {e}")))?;
        s.trim_end_matches(['\r', '\n']).to_string()
    } else if let Some(p) = &args.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p.clone()
    } else {
        crate::output::prompt::read_line("Password: ")?
    };
    if user.is_empty() || password.is_empty() {
        return Err(CliError::usage(
            "Error: Cannot perform an interactive login without a username and password".into(),
        ));
    }
    std::fs::create_dir_all(root).map_err(|e| CliError::runtime(format!("create root: {e}")))?;
    registry::login(
        &registry::credentials_path(root),
        registry,
        &user,
        &password,
    )
    .map_err(CliError::runtime)?;
    println!("Login Succeeded");
    Ok(0)
}

/// `logout` arguments.
#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Registry (docker.io when omitted).
    registry: Option<String>,
}

/// `mvm logout`.
pub fn logout(root: &Path, args: &LogoutArgs) -> Result<i32, CliError> {
    let registry = args
        .registry
        .as_deref()
        .unwrap_or(registry::name::DEFAULT_REGISTRY);
    if registry::logout(&registry::credentials_path(root), registry).map_err(CliError::runtime)? {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// images

/// `images` arguments.
#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Only show image IDs.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Show all images (intermediate images of builds too).
    #[arg(short = 'a', long)]
    all: bool,
    /// Show digests.
    #[arg(long)]
    digests: bool,
    /// Don't truncate output.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Format output using a Go-template-like string ('{{.Repository}}:{{.Tag}}') or json.
    #[arg(long)]
    format: Option<String>,
    /// Filter output: reference=PATTERN, dangling=true|false, label=KEY[=VALUE].
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    /// Show only images of this repository (REPOSITORY[:TAG]).
    repository: Option<String>,
}

fn created_since(created: Option<&str>) -> String {
    match created.and_then(parse_rfc3339) {
        Some(t) => output::time::ago(u64::try_from(output::time::now_secs() - t).unwrap_or(0)),
        None => "N/A".into(),
    }
}

fn created_at(created: Option<&str>) -> String {
    created
        .and_then(parse_rfc3339)
        .map_or_else(String::new, output::time::go_utc)
}

/// Column names of the image tables (`images`, `history`).
const HEADERS: Headers = &[
    ("ID", "IMAGE ID"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("VirtualSize", "VIRTUAL SIZE"),
    ("SharedSize", "SHARED SIZE"),
    ("UniqueSize", "UNIQUE SIZE"),
    ("CreatedBy", "CREATED BY"),
];

/// `mvm images`.
pub fn images(root: &Path, args: &ImagesArgs) -> Result<i32, CliError> {
    let store = open_store(root)?;
    let mut list = catalog::list(&store).map_err(CliError::runtime)?;
    if !args.all {
        // A build's intermediate images show with -a only, as Docker's.
        let hidden = catalog::intermediates(&store).map_err(CliError::runtime)?;
        list.retain(|i| !i.tags.is_empty() || !hidden.contains(&i.manifest_digest));
    }
    let digests = catalog::repo_digests(&store).map_err(CliError::runtime)?;
    list.sort_by(|a, b| {
        let t = |i: &ImageRecord| i.config.created.as_deref().and_then(parse_rfc3339);
        t(b).cmp(&t(a)).then_with(|| a.tags.cmp(&b.tags))
    });
    let filter = args.repository.as_deref().map(|r| {
        let (repo, tag) = match r.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
            Some((repo, t)) => (repo, Some(t.to_string())),
            None => (r, None),
        };
        (registry::familiar(repo), tag)
    });
    let filters = Filters::parse(&args.filter, &["reference", "dangling", "label"])?;
    let dangling = filters.boolean("dangling")?;
    let mut rows: Vec<BTreeMap<&str, String>> = Vec::new();
    for img in &list {
        let labels = img.config.config.labels.clone().unwrap_or_default();
        if dangling.is_some_and(|d| d != img.tags.is_empty()) || !filters.labels(&labels) {
            continue;
        }
        let rds = catalog::repo_digests_of(&digests, &img.manifest_digest);
        let mut names: Vec<(String, String)> = img
            .tags
            .iter()
            .map(|t| {
                let (r, tag) = t.rsplit_once(':').unwrap_or((t, "latest"));
                (r.to_string(), tag.to_string())
            })
            .collect();
        if names.is_empty() {
            for rd in &rds {
                if let Some((r, _)) = rd.rsplit_once('@') {
                    names.push((r.to_string(), "<none>".into()));
                }
            }
        }
        if names.is_empty() {
            names.push(("<none>".into(), "<none>".into()));
        }
        names.dedup();
        for (repo, tag) in names {
            if let Some((frepo, ftag)) = &filter
                && (repo != *frepo || ftag.as_ref().is_some_and(|t| *t != tag))
            {
                continue;
            }
            let full = format!("{repo}:{tag}");
            if !filters.any("reference", |p| glob(p, &repo) || glob(p, &full)) {
                continue;
            }
            let digest = rds
                .iter()
                .find_map(|rd| rd.strip_prefix(&format!("{repo}@")))
                .unwrap_or("<none>")
                .to_string();
            let size = human_size(mvm_engine::image::size(img));
            let id = if args.no_trunc {
                img.id.to_string()
            } else {
                img.id.short().to_string()
            };
            let created = img.config.created.as_deref();
            rows.push(BTreeMap::from([
                ("Containers", "N/A".to_string()),
                ("CreatedAt", created_at(created)),
                ("CreatedSince", created_since(created)),
                ("Digest", digest),
                ("ID", id),
                ("Repository", repo),
                ("SharedSize", "N/A".into()),
                ("Size", size.clone()),
                ("Tag", tag),
                ("UniqueSize", "N/A".into()),
                ("VirtualSize", size),
            ]));
        }
    }
    if args.quiet {
        let mut out = std::io::stdout().lock();
        let mut seen = std::collections::BTreeSet::new();
        for r in &rows {
            if seen.insert(r["ID"].clone()) {
                let _ = writeln!(out, "{}", r["ID"]);
            }
        }
        return Ok(0);
    }
    let format = match &args.format {
        Some(f) => f.clone(),
        None if args.digests => {
            "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
                .into()
        }
        None => "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}".into(),
    };
    print_formatted(&format, &rows, HEADERS)?;
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// tag, rmi

/// `tag` arguments.
#[derive(Args, Debug)]
pub struct TagArgs {
    /// SOURCE_IMAGE[:TAG]
    source: String,
    /// TARGET_IMAGE[:TAG]
    target: String,
}

/// `mvm tag`.
pub fn tag(root: &Path, args: &TagArgs) -> Result<i32, CliError> {
    let store = open_store(root)?;
    catalog::tag(&store, &args.source, &args.target).map_err(CliError::runtime)?;
    if let Ok(img) = catalog::resolve(&store, &args.target) {
        image_event(root, "tag", &img.id.to_string(), &args.target);
    }
    Ok(0)
}

/// `rmi` arguments.
#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Force removal of the image.
    #[arg(short = 'f', long)]
    force: bool,
    /// Do not delete untagged parents (accepted; there are none).
    #[arg(long = "no-prune")]
    no_prune: bool,
    /// Images.
    #[arg(required = true)]
    images: Vec<String>,
}

/// IDs of containers (under `<root>/containers`) made from the image `id`.
pub fn containers_using(root: &Path, id: &mvm_rootfs::Digest) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(root.join("containers")) else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(data) = std::fs::read(e.path().join("config.json")) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<Value>(&data) else {
            continue;
        };
        if v.get("image_id").and_then(Value::as_str) == Some(id.to_string().as_str()) {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

/// The store's name for `name` when it is a tag or repo digest (not an ID).
fn name_key(store: &Store, image: &ImageRecord, name: &str) -> Option<String> {
    let reference = Reference::parse(name).ok()?;
    let repo = registry::familiar(&reference.repository);
    if let Some(d) = &reference.digest {
        let key = format!("{repo}@{d}");
        let all = catalog::repo_digests(store).ok()?;
        return all.contains_key(&key).then_some(key);
    }
    let tag = reference.tag.as_deref().unwrap_or("latest");
    [
        format!("{repo}:{tag}"),
        format!("{}:{tag}", reference.repository),
    ]
    .into_iter()
    .find(|k| image.tags.contains(k))
}

fn rmi_one(
    root: &Path,
    store: &Store,
    name: &str,
    force: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let _lock = store.lock().map_err(CliError::runtime)?;
    let image = catalog::resolve(store, name).map_err(|e| match e {
        StoreError::NotFound(_) => CliError::with_code(1, format!("No such image: {name}")),
        e => CliError::runtime(e),
    })?;
    let by_name = name_key(store, &image, name);
    let repos: std::collections::BTreeSet<&str> = image
        .tags
        .iter()
        .filter_map(|t| t.rsplit_once(':').map(|(r, _)| r))
        .collect();
    if by_name.is_none() && repos.len() > 1 && !force {
        return Err(CliError::with_code(
            1,
            format!(
                "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                image.id.short()
            ),
        ));
    }
    // Deleting the image (not only a name) needs no container to use it.
    let deleting = match &by_name {
        Some(k) => image.tags.iter().all(|t| t == k) || !image.tags.contains(k),
        None => true,
    };
    if deleting
        && !force
        && let Some(c) = containers_using(root, &image.id).first()
    {
        return Err(CliError::with_code(
            1,
            format!(
                "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {}",
                &c[..c.len().min(12)],
                image.id.short()
            ),
        ));
    }

    if let Some(k) = &by_name {
        catalog::untag(store, k).map_err(CliError::runtime)?;
        let _ = writeln!(out, "Untagged: {k}");
        image_event(root, "untag", &image.id.to_string(), k);
        let image = store
            .load(&image.manifest_digest)
            .map_err(CliError::runtime)?;
        if !image.tags.is_empty() {
            return Ok(());
        }
    }
    let image = store
        .load(&image.manifest_digest)
        .map_err(CliError::runtime)?;
    let deleted = catalog::delete(store, &image).map_err(CliError::runtime)?;
    for u in &deleted.untagged {
        let _ = writeln!(out, "Untagged: {u}");
    }
    if !deleted.blobs.is_empty() {
        let _ = writeln!(out, "Deleted: {}", image.id);
        image_event(root, "delete", &image.id.to_string(), &image.id.to_string());
        // Then each layer that went, as Docker lists them (not the manifest or index blobs,
        // which Docker's store does not have).
        let layer = |b: &&mvm_rootfs::Digest| image.manifest.layers.iter().any(|l| &l.digest == *b);
        for b in deleted.blobs.iter().filter(layer) {
            let _ = writeln!(out, "Deleted: {b}");
        }
    }
    Ok(())
}

/// `mvm rmi`.
pub fn rmi(root: &Path, args: &RmiArgs) -> Result<i32, CliError> {
    let _ = args.no_prune;
    let store = open_store(root)?;
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    for name in &args.images {
        if let Err(e) = rmi_one(root, &store, name, args.force, &mut out) {
            eprintln!("Error response from daemon: {e}");
            failed = Some(e.code);
        }
    }
    Ok(failed.unwrap_or(0))
}

// ---------------------------------------------------------------------------------------------
// inspect, history

/// `image inspect` arguments.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format the output using the given Go template.
    #[arg(short = 'f', long)]
    format: Option<String>,
    /// Images.
    #[arg(required = true)]
    images: Vec<String>,
}

fn print_json_indented(v: &Value) {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    if serde::Serialize::serialize(v, &mut ser).is_ok() {
        println!("{}", String::from_utf8_lossy(&buf));
    }
}

/// `mvm image inspect`: a JSON array; exit 1 when some image is missing, as Docker.
pub fn inspect(root: &Path, names: &[String], format: Option<&str>) -> Result<i32, CliError> {
    let template = format
        .map(crate::output::inspect::parse_format)
        .transpose()?;
    let store = open_store(root)?;
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for n in names {
        match catalog::resolve(&store, n) {
            Ok(img) => found.push(crate::output::inspect::image_json(&store, &img)),
            Err(StoreError::NotFound(_)) => missing.push(n.clone()),
            Err(e) => return Err(CliError::runtime(e)),
        }
    }
    match &template {
        Some(t) => crate::output::inspect::print_values(&found, Some(t))?,
        None => print_json_indented(&Value::Array(found)),
    }
    if missing.is_empty() {
        Ok(0)
    } else {
        Err(CliError::with_code(
            1,
            format!("No such image: {}", missing.join(", ")),
        ))
    }
}

/// `history` arguments.
#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Don't truncate output.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Only show image IDs.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Format output using a Go-template-like string or json.
    #[arg(long)]
    format: Option<String>,
    /// Image.
    image: String,
}

/// `mvm history`.
pub fn history(root: &Path, args: &HistoryArgs) -> Result<i32, CliError> {
    let store = open_store(root)?;
    let img = catalog::resolve(&store, &args.image).map_err(CliError::runtime)?;
    let mut layers = img.manifest.layers.iter();
    let mut steps: Vec<(Option<String>, String, String, u64)> = Vec::new();
    if img.config.history.is_empty() {
        for l in &img.manifest.layers {
            steps.push((
                img.config.created.clone(),
                String::new(),
                String::new(),
                l.size,
            ));
        }
    }
    for h in &img.config.history {
        let size = if h.empty_layer {
            0
        } else {
            layers.next().map_or(0, |l| l.size)
        };
        steps.push((
            h.created.clone(),
            h.created_by.clone().unwrap_or_default(),
            h.comment.clone().unwrap_or_default(),
            size,
        ));
    }
    steps.reverse();
    let id = if args.no_trunc {
        img.id.to_string()
    } else {
        img.id.short().to_string()
    };
    let mut rows = Vec::new();
    for (i, (created, by, comment, size)) in steps.iter().enumerate() {
        let image_col = if i == 0 {
            id.clone()
        } else {
            "<missing>".into()
        };
        let by = by.replace('\n', " ");
        let by = if !args.no_trunc && by.chars().count() > 45 {
            format!("{}…", by.chars().take(44).collect::<String>())
        } else {
            by
        };
        rows.push(BTreeMap::from([
            ("ID", image_col),
            ("CreatedSince", created_since(created.as_deref())),
            ("CreatedAt", created.clone().unwrap_or_default()),
            ("CreatedBy", by),
            ("Size", human_size(*size)),
            ("Comment", comment.clone()),
        ]));
    }
    if args.quiet {
        for r in &rows {
            println!("{}", r["ID"]);
        }
        return Ok(0);
    }
    let format = args.format.clone().unwrap_or_else(|| {
        "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}".into()
    });
    let format =
        if format == "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}" {
            format.replacen("{{.ID}}", "{{.Image}}", 1)
        } else {
            format
        };
    let rows: Vec<BTreeMap<&str, String>> = rows
        .into_iter()
        .map(|mut r| {
            r.insert("Image", r["ID"].clone());
            r
        })
        .collect();
    print_formatted(&format, &rows, HEADERS)?;
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// save, load, prune

/// `save` arguments.
#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to a file, instead of STDOUT.
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// Images: NAME[:TAG] (a NAME alone saves every tag of the repository), ID or
    /// NAME@DIGEST.
    #[arg(required = true)]
    images: Vec<String>,
}

/// True when `name` names a repository without a tag or digest (`busybox`, not `busybox:1`).
fn is_name_only(name: &str) -> bool {
    !name.contains('@') && !name.rsplit('/').next().is_some_and(|l| l.contains(':'))
}

/// What `save` writes for one argument: the image, and the names to record for it.
fn save_items(store: &Store, name: &str) -> Result<Vec<SaveItem>, CliError> {
    let not_found = |e: StoreError| match e {
        StoreError::NotFound(_) => CliError::with_code(1, format!("No such image: {name}")),
        e => CliError::runtime(e),
    };
    if is_name_only(name)
        && let Ok(reference) = Reference::parse(name)
    {
        // Every tag of the repository, as `docker save busybox` does.
        let repo = registry::familiar(&reference.repository);
        let prefix = format!("{repo}:");
        let tags: Vec<(String, mvm_rootfs::Digest)> = store
            .tags()
            .map_err(CliError::runtime)?
            .into_iter()
            .filter(|(t, _)| t.strip_prefix(&prefix).is_some_and(|r| !r.contains('/')))
            .collect();
        if !tags.is_empty() {
            return tags
                .into_iter()
                .map(|(t, d)| {
                    Ok(SaveItem {
                        image: store.load(&d).map_err(CliError::runtime)?,
                        names: vec![t],
                    })
                })
                .collect();
        }
    }
    let image = catalog::resolve(store, name).map_err(not_found)?;
    let names = name_key(store, &image, name)
        .filter(|k| !k.contains('@'))
        .into_iter()
        .collect();
    Ok(vec![SaveItem { image, names }])
}

/// `mvm save`.
pub fn save(root: &Path, args: &SaveArgs) -> Result<i32, CliError> {
    if args.output.is_none() {
        crate::output::outfile::refuse_terminal_stdout()?;
    }
    let store = open_store(root)?;
    let mut items = Vec::new();
    for name in &args.images {
        items.extend(save_items(&store, name)?);
    }
    match &args.output {
        Some(path) => {
            crate::output::outfile::write_replacing(path, "failed to save image", |w| {
                archive::save(&store, &items, w).map_err(CliError::runtime)
            })?;
        }
        None => {
            let mut w = std::io::BufWriter::new(std::io::stdout().lock());
            archive::save(&store, &items, &mut w).map_err(CliError::runtime)?;
        }
    }
    Ok(0)
}

/// `load` arguments.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from tar archive file, instead of STDIN.
    #[arg(short = 'i', long)]
    input: Option<PathBuf>,
    /// Suppress the load output (accepted; there is no progress to hide).
    #[arg(short = 'q', long)]
    quiet: bool,
}

/// `mvm load`.
pub fn load(root: &Path, args: &LoadArgs) -> Result<i32, CliError> {
    let _ = args.quiet;
    let mut input: Box<dyn Read> = match &args.input {
        Some(p) => Box::new(
            std::fs::File::open(p)
                .map_err(|e| CliError::runtime(format!("open {}: {e}", p.display())))?,
        ),
        None if std::io::stdin().is_terminal() => {
            return Err(CliError::with_code(
                1,
                "requested load from stdin, but stdin is empty".into(),
            ));
        }
        None => Box::new(std::io::stdin().lock()),
    };
    let store = open_store(root)?;
    let loaded = archive::load(&store, &mut input).map_err(CliError::runtime)?;
    let mut out = std::io::stdout().lock();
    for l in &loaded {
        for (name, old) in &l.replaced {
            let _ = writeln!(
                out,
                "The image {name} already exists, renaming the old one with ID {old} to empty string"
            );
        }
        if l.names.is_empty() {
            let _ = writeln!(out, "Loaded image ID: {}", l.image.id);
        }
        for n in &l.names {
            let _ = writeln!(out, "Loaded image: {n}");
        }
        let id = l.image.id.to_string();
        image_event(root, "load", &id, l.names.first().unwrap_or(&id));
    }
    Ok(0)
}

/// `image prune` arguments.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused images, not just dangling ones.
    #[arg(short = 'a', long)]
    all: bool,
    /// Do not prompt for confirmation.
    #[arg(short = 'f', long)]
    force: bool,
}

/// `mvm image prune`.
pub fn prune(root: &Path, args: &PruneArgs) -> Result<i32, CliError> {
    let warning = if args.all {
        "This will remove all images without at least one container associated to them."
    } else {
        "This will remove all dangling images."
    };
    if !output::prompt::confirm(args.force, warning) {
        return Ok(0);
    }
    let report = mvm_engine::system::prune_images(root, args.all).map_err(CliError::runtime)?;
    let mut out = output::prune::section("Deleted Images", &output::prune::image_lines(&report));
    out.push_str(&format!(
        "Total reclaimed space: {}",
        human_size_with_precision(report.reclaimed, 4)
    ));
    println!("{out}");
    Ok(0)
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Apply Dockerfile instructions to the image (CMD, ENTRYPOINT, ENV, WORKDIR, USER, ...).
    #[arg(short = 'c', long = "change")]
    pub change: Vec<String>,
    /// Commit message.
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// Tarball (plain or gzip), or - for stdin.
    pub file: String,
    /// Name for the image, NAME[:TAG].
    pub reference: Option<String>,
}

/// `mvm import`.
pub fn import(root: &Path, args: &ImportArgs) -> Result<i32, CliError> {
    let reference = args
        .reference
        .as_deref()
        .map(Reference::parse)
        .transpose()
        .map_err(CliError::runtime)?;
    let store = Store::open(&root.join("images")).map_err(CliError::runtime)?;
    let mut input: Box<dyn std::io::Read> = if args.file == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(&args.file)
                .map_err(|e| CliError::runtime(format!("open {}: {e}", args.file)))?,
        )
    };
    let image = mvm_rootfs::import::import(
        &store,
        &mut input,
        reference.as_ref(),
        &args.change,
        args.message.as_deref(),
        &mvm_rootfs::time::now(),
    )
    .map_err(CliError::runtime)?;
    println!("{}", image.id);
    let id = image.id.to_string();
    image_event(root, "import", &id, &id);
    Ok(0)
}
