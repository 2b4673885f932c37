//! Docker-style output for the `mvm` CLI, written once for every command: tables and
//! `--format` templates, times and human durations, sizes, states, inspect documents, and
//! the `[y/N]` question. The engine returns data; only the CLI turns it into text for a
//! person.

pub mod filter;
pub mod inspect;
pub mod outfile;
pub mod prompt;
pub mod prune;
pub mod state;
pub mod table;
pub mod template;
pub mod time;
pub mod units;
