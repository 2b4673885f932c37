//! `mvm stats` (a container's VM as the host sees it: CPU, memory, block I/O) and `mvm top`
//! (the processes inside the guest, listed by `ps` run through the agent).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Args;
use mvm_engine::container::{self, ContainerRecord};

use crate::error::CliError;
use crate::output::table::{Headers, print_formatted};
use crate::output::units::{binary_size, human_size};

/// How long CPU use is sampled for one line of figures.
const SAMPLE: Duration = Duration::from_millis(500);

fn row(
    rec: &ContainerRecord,
    before: container::stats::Counters,
    after: container::stats::Counters,
    secs: f64,
    pids: Option<usize>,
) -> BTreeMap<&'static str, String> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let running = rec.is_running();
    let cpu = if running && secs > 0.0 {
        after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / hz / secs * 100.0
    } else {
        0.0
    };
    let limit = rec.spec.resources.memory_mib << 20;
    let mem = if running { after.rss } else { 0 };
    BTreeMap::from([
        ("Container", rec.id[..12].to_string()),
        ("ID", rec.id[..12].to_string()),
        ("Name", rec.name.clone()),
        ("CPUPerc", format!("{cpu:.2}%")),
        (
            "MemUsage",
            format!("{} / {}", binary_size(mem), binary_size(limit)),
        ),
        (
            "MemPerc",
            format!("{:.2}%", mem as f64 * 100.0 / limit.max(1) as f64),
        ),
        ("NetIO", {
            let (rx, tx) = if running {
                container::stats::net_io(rec)
            } else {
                (0, 0)
            };
            format!("{} / {}", human_size(rx), human_size(tx))
        }),
        (
            "BlockIO",
            format!("{} / {}", human_size(after.read), human_size(after.written)),
        ),
        (
            "PIDs",
            match (running, pids) {
                (true, Some(n)) => n.to_string(),
                (true, None) => "-".into(),
                (false, _) => "0".into(),
            },
        ),
    ])
}

/// Column names of `stats`, as Docker's.
const HEADERS: Headers = &[
    ("Container", "CONTAINER ID"),
    ("ID", "CONTAINER ID"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
];

const DEFAULT_FORMAT: &str = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

/// `mvm stats [-a] [--no-stream] [--format] [CONTAINER...]`.
pub fn stats(
    root: &Path,
    keys: &[String],
    all: bool,
    no_stream: bool,
    format: Option<&str>,
) -> Result<i32, CliError> {
    let format = format.unwrap_or(DEFAULT_FORMAT);
    loop {
        let records: Vec<ContainerRecord> = if keys.is_empty() {
            let mut l: Vec<_> = container::list(root)
                .into_iter()
                .filter(|c| all || c.is_running())
                .collect();
            l.sort_by_key(|c| std::cmp::Reverse(c.created_key()));
            l
        } else {
            keys.iter()
                .map(|k| {
                    container::resolve(root, k)
                        .map(|(_, r)| r)
                        .map_err(|e| CliError::with_code(1, e.to_string()))
                })
                .collect::<Result<_, _>>()?
        };
        let pids: Vec<Vec<u32>> = records.iter().map(container::stats::host_pids).collect();
        let before: Vec<container::stats::Counters> =
            pids.iter().map(|p| container::stats::read(p)).collect();
        let t0 = Instant::now();
        std::thread::sleep(SAMPLE);
        let secs = t0.elapsed().as_secs_f64();
        let rows: Vec<_> = records
            .iter()
            .zip(&pids)
            .zip(&before)
            .map(|((r, p), b)| {
                let after = container::stats::read(p);
                let count = r
                    .is_running()
                    .then(|| container::top::count(root, r))
                    .flatten();
                row(r, *b, after, secs, count)
            })
            .collect();
        if !no_stream {
            // Clear the screen and home the cursor, as docker stats redraws.
            print!("\x1b[2J\x1b[H");
        }
        print_formatted(format, &rows, HEADERS)?;
        let _ = std::io::stdout().flush();
        if no_stream {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `mvm top CONTAINER [ps OPTIONS]`: `ps` inside the guest, through the agent.
pub fn top(root: &Path, key: &str, ps_args: &[String]) -> Result<i32, CliError> {
    if ps_args.is_empty() {
        return top_ef(root, key);
    }
    let (_, rec) = container::resolve(root, key)?;
    if rec.effective().0 != container::Status::Running {
        return Err(container::ContainerError::NotRunning(rec.id).into());
    }
    let spec = container::exec::ExecSpec {
        args: std::iter::once("ps".to_string())
            .chain(ps_args.iter().cloned())
            .collect(),
        workdir: Some("/".into()),
        user: Some("0".into()),
        ..Default::default()
    };
    Ok(container::exec::exec(root, key, &spec, true, || {})?)
}

/// `top` without ps options: the container's processes in the columns of Docker's
/// `ps -ef` (PIDs as the container numbers them: its processes have no host PID).
fn top_ef(root: &Path, key: &str) -> Result<i32, CliError> {
    let procs = container::top::processes(root, key)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let rows: Vec<BTreeMap<&str, String>> = procs
        .iter()
        .map(|p| {
            let secs = p.cpu_ms / 1000;
            let age = now.saturating_sub(p.started).max(1);
            BTreeMap::from([
                ("UID", p.user.clone()),
                ("PID", p.pid.to_string()),
                ("PPID", p.ppid.to_string()),
                ("C", (p.cpu_ms / 10 / age).to_string()),
                ("STIME", start_time(p.started, now)),
                ("TTY", p.tty.clone()),
                (
                    "TIME",
                    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
                ),
                ("CMD", p.cmd.clone()),
            ])
        })
        .collect();
    print_formatted(
        "table {{.UID}}\t{{.PID}}\t{{.PPID}}\t{{.C}}\t{{.STIME}}\t{{.TTY}}\t{{.TIME}}\t{{.CMD}}",
        &rows,
        &[],
    )?;
    Ok(0)
}

/// `ps`'s STIME (UTC): the time of day for a process started today, else the month and day.
fn start_time(started: u64, now: u64) -> String {
    if now.saturating_sub(started) < 24 * 3600 {
        let day = started % 86_400;
        format!("{:02}:{:02}", day / 3600, day / 60 % 60)
    } else {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let (_, m, d) = mvm_rootfs::time::civil_from_days((started / 86_400) as i64);
        let month = MONTHS.get((m - 1) as usize).copied().unwrap_or("???");
        format!("{month}{d:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_counters() {
        let me = container::stats::read(&[std::process::id()]);
        assert!(me.rss > 0);
    }
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Show all containers (default shows just running).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Disable streaming stats and only pull the first result.
    #[arg(long = "no-stream")]
    pub no_stream: bool,
    /// Format output using a template.
    #[arg(long)]
    pub format: Option<String>,
    /// Containers (all running ones when none is named).
    pub containers: Vec<String>,
}

/// `top`'s arguments.
#[derive(clap::Args, Debug)]
#[command(trailing_var_arg = true)]
pub struct TopArgs {
    /// Container.
    pub container: String,
    /// Options for ps inside the container.
    #[arg(allow_hyphen_values = true)]
    pub ps_options: Vec<String>,
}
