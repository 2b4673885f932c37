//! `mvm ps`: the container list with Docker's columns, filters and `--format`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use clap::Args;
use mvm_engine::container::{self, ContainerRecord};

use crate::error::CliError;
use crate::output::filter::has_label;
use crate::output::state::status_text;
use crate::output::table::{Headers, labels_column, print_formatted};
use crate::output::time::{ago, since};
use crate::output::units::human_size;

/// Options of `mvm ps`.
#[derive(Debug, Default)]
pub struct PsOptions {
    /// `-a`: stopped containers too.
    pub all: bool,
    /// `-q`: IDs only.
    pub quiet: bool,
    /// `--no-trunc`.
    pub no_trunc: bool,
    /// `-l`: the latest created container only.
    pub latest: bool,
    /// `-n N`: the N latest created containers.
    pub last: Option<usize>,
    /// `--filter key=value`, repeatable.
    pub filters: Vec<String>,
    /// `--format`.
    pub format: Option<String>,
    /// `-s`: the SIZE column (the writable disk, and with the image's layers).
    pub size: bool,
}

/// One `--filter`.
#[derive(Debug, PartialEq, Eq)]
enum Filter {
    Status(String),
    Name(String),
    Id(String),
    Exited(i32),
    Ancestor(String),
    /// `label=KEY` or `label=KEY=VALUE`.
    Label(String),
}

const STATUSES: &[&str] = &[
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];

fn parse_filter(f: &str) -> Result<Filter, CliError> {
    let (k, v) = f.split_once('=').ok_or_else(|| {
        CliError::with_code(
            1,
            format!("bad format of filter (expected name=value): {f}"),
        )
    })?;
    Ok(match k {
        "status" if STATUSES.contains(&v) => Filter::Status(v.into()),
        "status" => {
            return Err(CliError::with_code(
                1,
                format!(
                    "invalid filter 'status={v}': use one of {}",
                    STATUSES.join(", ")
                ),
            ));
        }
        "name" => Filter::Name(v.trim_start_matches('/').into()),
        "id" => Filter::Id(v.into()),
        "exited" => Filter::Exited(
            v.parse()
                .map_err(|_| CliError::with_code(1, format!("invalid filter 'exited={v}'")))?,
        ),
        "ancestor" => Filter::Ancestor(v.into()),
        "label" => Filter::Label(v.into()),
        _ => return Err(CliError::with_code(1, format!("invalid filter '{k}'"))),
    })
}

/// Whether `rec` passes every filter; filters of one kind are ORed, kinds are ANDed.
fn passes(rec: &ContainerRecord, filters: &[Filter]) -> bool {
    let (status, code) = rec.effective();
    let mut by_kind: BTreeMap<&str, bool> = BTreeMap::new();
    for f in filters {
        let (kind, ok) = match f {
            // Labels are ANDed, each label filter on its own, as Docker's.
            Filter::Label(l) if !has_label(&rec.spec.labels, l) => return false,
            Filter::Label(_) => continue,
            Filter::Status(s) => ("status", *s == status.as_str()),
            Filter::Name(n) => ("name", rec.name.contains(n.as_str())),
            Filter::Id(p) => ("id", rec.id.starts_with(p.as_str())),
            Filter::Exited(c) => (
                "exited",
                status == container::Status::Exited && code == Some(*c),
            ),
            Filter::Ancestor(a) => (
                "ancestor",
                rec.spec.image == *a
                    || rec.spec.image.strip_suffix(":latest") == Some(a.as_str())
                    || rec
                        .image_id
                        .trim_start_matches("sha256:")
                        .starts_with(a.trim_start_matches("sha256:")),
            ),
        };
        *by_kind.entry(kind).or_insert(false) |= ok;
    }
    by_kind.values().all(|ok| *ok)
}

/// `ps`'s COMMAND: the words, those with blanks or quotes single-quoted as a shell would
/// read them back, the whole in double quotes (Docker CLI 24 and later).
fn command_column(rec: &ContainerRecord, no_trunc: bool) -> String {
    let words: Vec<String> = rec
        .process
        .args
        .iter()
        .map(|w| {
            if w.is_empty() || w.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
                format!("'{}'", w.replace('\'', "'\\''"))
            } else {
                w.clone()
            }
        })
        .collect();
    let cmd = serde_json::to_string(&words.join(" ")).unwrap_or_default();
    if !no_trunc && cmd.chars().count() > 22 {
        let cut: String = cmd.chars().take(20).collect();
        return format!("{cut}…\"");
    }
    cmd
}

/// The fields `--format` may name, as Docker's `ps` calls them.
fn fields(rec: &ContainerRecord, no_trunc: bool) -> BTreeMap<&'static str, String> {
    let id = if no_trunc {
        rec.id.clone()
    } else {
        rec.id[..12].to_string()
    };
    BTreeMap::from([
        ("ID", id),
        ("Image", rec.spec.image.clone()),
        ("Command", command_column(rec, no_trunc)),
        ("CreatedAt", rec.created.clone()),
        ("RunningFor", ago(since(Some(&rec.created)))),
        ("Ports", crate::output::inspect::ports_column(rec)),
        ("State", rec.effective().0.to_string()),
        ("Status", status_text(rec)),
        ("Size", "0B".into()),
        ("Names", rec.name.clone()),
        ("Labels", labels_column(&rec.spec.labels)),
        ("Mounts", String::new()),
        (
            "LocalVolumes",
            rec.mounts
                .iter()
                .filter(|m| m.kind == mvm_engine::volume::mounts::Kind::Volume)
                .count()
                .to_string(),
        ),
        // The daemon's platform of the image; an API 1.41 daemon gives none.
        ("Platform", String::new()),
        (
            "Networks",
            rec.endpoints
                .iter()
                .map(|e| e.network.clone())
                .collect::<Vec<_>>()
                .join(","),
        ),
    ])
}

/// Column names of `ps`, as Docker's.
const HEADERS: Headers = &[
    ("ID", "CONTAINER ID"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
];

/// The containers `ps` lists, newest first.
fn select(root: &Path, opts: &PsOptions) -> Result<Vec<ContainerRecord>, CliError> {
    let filters = opts
        .filters
        .iter()
        .map(|f| parse_filter(f))
        .collect::<Result<Vec<_>, _>>()?;
    let mut list = container::list(root);
    list.sort_by(|a, b| {
        b.created_key()
            .cmp(&a.created_key())
            .then_with(|| a.id.cmp(&b.id))
    });
    // As Docker: -l, -n and a status filter look at stopped containers too.
    let all = opts.all
        || opts.latest
        || opts.last.is_some()
        || filters.iter().any(|f| matches!(f, Filter::Status(_)));
    let limit = if opts.latest { Some(1) } else { opts.last };
    let mut out: Vec<ContainerRecord> = Vec::new();
    for (i, c) in list.into_iter().enumerate() {
        if limit.is_some_and(|n| i >= n) {
            break;
        }
        if (all || c.is_running()) && passes(&c, &filters) {
            out.push(c);
        }
    }
    Ok(out)
}

/// `mvm ps`.
pub fn ps(root: &Path, opts: &PsOptions) -> Result<i32, CliError> {
    let list = select(root, opts)?;
    let rows: Vec<_> = list
        .iter()
        .map(|c| {
            let mut f = fields(c, opts.no_trunc);
            if opts.size {
                let (rw, all) = mvm_engine::system::container_sizes(root, c);
                f.insert(
                    "Size",
                    format!("{} (virtual {})", human_size(rw), human_size(all)),
                );
            }
            f
        })
        .collect();
    if opts.quiet {
        let mut out = std::io::stdout().lock();
        for r in &rows {
            let _ = writeln!(out, "{}", r["ID"]);
        }
        return Ok(0);
    }
    let default = if opts.size {
        "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}\t{{.Size}}"
    } else {
        "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
    };
    let format = opts.format.as_deref().unwrap_or(default);
    print_formatted(format, &rows, HEADERS)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse() {
        assert_eq!(
            parse_filter("status=exited").unwrap(),
            Filter::Status("exited".into())
        );
        assert_eq!(parse_filter("exited=3").unwrap(), Filter::Exited(3));
        assert!(parse_filter("status=sleeping").is_err());
        assert!(parse_filter("colour=red").is_err());
        assert!(parse_filter("name").is_err());
        assert!(parse_filter("exited=x").is_err());
    }
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default shows just running).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only display container IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Don't truncate output.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Show the latest created container (includes all states).
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Show n last created containers (includes all states).
    #[arg(short = 'n', long = "last")]
    pub last: Option<usize>,
    /// Filter output based on conditions provided (status=, name=, id=, exited=, ancestor=).
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a template ('table ...', 'json', or '{{.Field}}...').
    #[arg(long)]
    pub format: Option<String>,
    /// Display total file sizes.
    #[arg(short = 's', long)]
    pub size: bool,
}

impl PsArgs {
    pub fn options(&self) -> PsOptions {
        PsOptions {
            all: self.all,
            quiet: self.quiet,
            no_trunc: self.no_trunc,
            latest: self.latest,
            last: self.last,
            filters: self.filter.clone(),
            format: self.format.clone(),
            size: self.size,
        }
    }
}
