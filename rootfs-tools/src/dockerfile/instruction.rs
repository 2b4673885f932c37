//! One logical line to one instruction: keyword dispatch and per-instruction arguments,
//! following BuildKit's `parser` and `instructions` packages.

use super::ParseError;
use super::ast::{ArgDecl, Instruction, InstructionKind, ShellOrExec};
use super::healthcheck;
use super::lines::LogicalLine;
use super::words::{
    FlagKind, Flags, Json, extract_flags, parse_json, parse_words, whitespace_list,
};

/// A parsed line: `FROM` starts a stage, everything else belongs to one.
pub(crate) enum Parsed {
    From {
        image: String,
        name: Option<String>,
        platform: Option<String>,
    },
    Other(Instruction),
}

pub(crate) fn parse_line(l: &LogicalLine, escape: char) -> Result<Parsed, ParseError> {
    let text = l.text.trim();
    let (keyword, rest) = text
        .split_once(char::is_whitespace)
        .map_or((text, ""), |(k, r)| (k, r.trim_start()));
    let keyword = keyword.to_ascii_uppercase();
    let at = |m: String| ParseError::at(l.line, m);
    if keyword == "FROM" {
        return parse_from(rest).map_err(at);
    }
    let kind = parse_kind(&keyword, rest, escape, l.line)?;
    Ok(Parsed::Other(Instruction {
        line: l.line,
        original: text.to_string(),
        kind,
    }))
}

fn parse_from(rest: &str) -> Result<Parsed, String> {
    let (raw, args) = extract_flags(rest);
    let flags = Flags::parse(&raw, &[("platform", FlagKind::String)])?;
    let words = whitespace_list(args);
    let name = match words.as_slice() {
        [_] => None,
        [_, as_, name] if as_.eq_ignore_ascii_case("as") => {
            let name = name.to_ascii_lowercase();
            if !valid_stage_name(&name) {
                return Err(format!(
                    "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
                ));
            }
            Some(name)
        }
        _ => return Err("FROM requires either one or three arguments".into()),
    };
    Ok(Parsed::From {
        image: words[0].clone(),
        name,
        platform: flags.string("platform"),
    })
}

/// `^[a-z][a-z0-9-_\.]*$`
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

fn parse_kind(
    keyword: &str,
    rest: &str,
    escape: char,
    line: usize,
) -> Result<InstructionKind, ParseError> {
    let at = |m: String| ParseError::at(line, m);
    if keyword == "ONBUILD" {
        return parse_onbuild(rest, escape, line);
    }
    let (raw_flags, args) = extract_flags(rest);
    let no_flags = |kind: InstructionKind| -> Result<InstructionKind, ParseError> {
        Flags::parse(&raw_flags, &[]).map_err(at)?;
        Ok(kind)
    };
    let one = |kw: &str| -> Result<String, ParseError> {
        if args.is_empty() {
            Err(at(format!("{kw} requires exactly one argument")))
        } else {
            Ok(args.to_string())
        }
    };
    match keyword {
        "RUN" => {
            for flag in &raw_flags {
                let name = flag.trim_start_matches('-');
                let name = name.split_once('=').map_or(name, |(n, _)| n);
                if ["mount", "network", "security"].contains(&name) {
                    return Err(at(format!("RUN --{name} is not supported yet")));
                }
            }
            let cmd = command("RUN", args).map_err(at)?;
            no_heredoc(&cmd).map_err(at)?;
            no_flags(InstructionKind::Run { cmd })
        }
        "CMD" => no_flags(InstructionKind::Cmd(command("CMD", args).map_err(at)?)),
        "ENTRYPOINT" => no_flags(InstructionKind::Entrypoint(
            command("ENTRYPOINT", args).map_err(at)?,
        )),
        "COPY" => {
            let flags = Flags::parse(
                &raw_flags,
                &[
                    ("from", FlagKind::String),
                    ("chown", FlagKind::String),
                    ("chmod", FlagKind::String),
                    ("link", FlagKind::Bool),
                ],
            )
            .map_err(at)?;
            let (sources, dest) = sources_dest("COPY", args).map_err(at)?;
            Ok(InstructionKind::Copy {
                sources,
                dest,
                from: flags.string("from"),
                chown: flags.string("chown"),
                chmod: flags.string("chmod"),
                link: flags.bool("link"),
            })
        }
        "ADD" => {
            let flags = Flags::parse(
                &raw_flags,
                &[
                    ("chown", FlagKind::String),
                    ("chmod", FlagKind::String),
                    ("checksum", FlagKind::String),
                    ("link", FlagKind::Bool),
                    ("keep-git-dir", FlagKind::Bool),
                ],
            )
            .map_err(at)?;
            let (sources, dest) = sources_dest("ADD", args).map_err(at)?;
            Ok(InstructionKind::Add {
                sources,
                dest,
                chown: flags.string("chown"),
                chmod: flags.string("chmod"),
                checksum: flags.string("checksum"),
                link: flags.bool("link"),
                keep_git_dir: flags.bool("keep-git-dir"),
            })
        }
        "ENV" => no_flags(InstructionKind::Env(
            name_values("ENV", args, escape).map_err(at)?,
        )),
        "LABEL" => no_flags(InstructionKind::Label(
            name_values("LABEL", args, escape).map_err(at)?,
        )),
        "ARG" => no_flags(InstructionKind::Arg(arg_decls(args, escape).map_err(at)?)),
        "WORKDIR" => no_flags(InstructionKind::Workdir(one("WORKDIR")?)),
        "USER" => no_flags(InstructionKind::User(one("USER")?)),
        "STOPSIGNAL" => no_flags(InstructionKind::StopSignal(one("STOPSIGNAL")?)),
        "MAINTAINER" => no_flags(InstructionKind::Maintainer(one("MAINTAINER")?)),
        "EXPOSE" => {
            let ports = whitespace_list(args);
            if ports.is_empty() {
                return Err(at("EXPOSE requires at least one argument".into()));
            }
            no_flags(InstructionKind::Expose(ports))
        }
        "VOLUME" => {
            let paths = list(args).map_err(at)?;
            if paths.is_empty() {
                return Err(at("VOLUME requires at least one argument".into()));
            }
            if paths.iter().any(|p| p.trim().is_empty()) {
                return Err(at("VOLUME specified can not be an empty string".into()));
            }
            no_flags(InstructionKind::Volume(paths))
        }
        "SHELL" => match parse_json(args) {
            Json::Array(v) if v.is_empty() => {
                Err(at("SHELL requires at least one argument".into()))
            }
            Json::Array(v) => no_flags(InstructionKind::Shell(v)),
            Json::NotStrings => Err(at(NOT_STRINGS.into())),
            Json::NotArray => Err(at("SHELL requires the arguments to be in JSON form".into())),
        },
        "HEALTHCHECK" => Ok(InstructionKind::Healthcheck(
            healthcheck::parse(&raw_flags, args).map_err(at)?,
        )),
        _ => Err(at(format!("unknown instruction: {keyword}"))),
    }
}

const NOT_STRINGS: &str = "when using JSON array syntax, arrays must be comprised of strings only";

fn parse_onbuild(rest: &str, escape: char, line: usize) -> Result<InstructionKind, ParseError> {
    let at = |m: &str| ParseError::at(line, m);
    let rest = rest.trim();
    if rest.is_empty() {
        return Err(at("ONBUILD requires at least one argument"));
    }
    let trigger = rest
        .split(char::is_whitespace)
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    match trigger.as_str() {
        "ONBUILD" => return Err(at("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")),
        "FROM" | "MAINTAINER" => {
            return Err(at(&format!(
                "{trigger} isn't allowed as an ONBUILD trigger"
            )));
        }
        _ => {}
    }
    let inner = LogicalLine {
        line,
        text: rest.to_string(),
    };
    match parse_line(&inner, escape)? {
        Parsed::Other(ins) => Ok(InstructionKind::Onbuild(Box::new(ins))),
        Parsed::From { .. } => Err(at("FROM isn't allowed as an ONBUILD trigger")),
    }
}

/// JSON exec form when the arguments are a JSON array of strings, else the shell form.
pub(crate) fn maybe_json(args: &str) -> Result<ShellOrExec, String> {
    match parse_json(args) {
        Json::Array(v) => Ok(ShellOrExec::Exec(v)),
        Json::NotStrings => Err(NOT_STRINGS.into()),
        Json::NotArray => Ok(ShellOrExec::Shell(args.to_string())),
    }
}

fn command(keyword: &str, args: &str) -> Result<ShellOrExec, String> {
    if args.trim().is_empty() {
        return Err(format!("{keyword} requires at least one argument"));
    }
    maybe_json(args)
}

/// JSON array, else whitespace-separated words (BuildKit's `parseMaybeJSONToList`).
fn list(args: &str) -> Result<Vec<String>, String> {
    match parse_json(args) {
        Json::Array(v) => Ok(v),
        Json::NotStrings => Err(NOT_STRINGS.into()),
        Json::NotArray => Ok(whitespace_list(args)),
    }
}

fn sources_dest(keyword: &str, args: &str) -> Result<(Vec<String>, String), String> {
    if let Json::NotArray = parse_json(args) {
        no_heredoc(&ShellOrExec::Shell(args.to_string()))?;
    }
    let mut all = list(args)?;
    if all.len() < 2 {
        return Err(format!("{keyword} requires at least two arguments"));
    }
    let dest = all.pop().unwrap_or_default();
    Ok((all, dest))
}

/// BuildKit reads `<<EOF` words in RUN, COPY and ADD as heredocs; we do not implement
/// them and say so instead of running a shell with a dangling redirection.
fn no_heredoc(cmd: &ShellOrExec) -> Result<(), String> {
    let ShellOrExec::Shell(s) = cmd else {
        return Ok(());
    };
    let heredoc = s.split_whitespace().any(|w| {
        let w = w.trim_start_matches(|c: char| c.is_ascii_digit());
        let Some(r) = w.strip_prefix("<<") else {
            return false;
        };
        let r = r.strip_prefix('-').unwrap_or(r);
        !r.is_empty() && !r.starts_with('<')
    });
    if heredoc {
        return Err("heredocs are not supported yet".into());
    }
    Ok(())
}

/// `ENV`/`LABEL`: `k=v ...`, or the legacy `k v` (one pair, the value the rest of the line)
/// when the first word has no `=` (BuildKit's `parseNameVal`).
fn name_values(keyword: &str, args: &str, escape: char) -> Result<Vec<(String, String)>, String> {
    let words = parse_words(args, escape);
    let Some(first) = words.first() else {
        return Err(format!("{keyword} requires at least one argument"));
    };
    if !first.contains('=') {
        return match args.split_once(char::is_whitespace) {
            Some((k, v)) if !v.trim().is_empty() => {
                Ok(vec![(k.to_string(), v.trim_start().to_string())])
            }
            _ => Err(format!("{keyword} must have two arguments")),
        };
    }
    let mut out = Vec::with_capacity(words.len());
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {w:?}. Must be of the form: name=value"
            ));
        };
        if k.is_empty() {
            return Err(format!("{keyword} names can not be blank"));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn arg_decls(args: &str, escape: char) -> Result<Vec<ArgDecl>, String> {
    let words = parse_words(args, escape);
    if words.is_empty() {
        return Err("ARG requires at least one argument".into());
    }
    words
        .into_iter()
        .map(|w| {
            let (name, default) = match w.split_once('=') {
                Some((n, d)) => (n.to_string(), Some(d.to_string())),
                None => (w, None),
            };
            if name.is_empty() {
                return Err("ARG names can not be blank".to_string());
            }
            Ok(ArgDecl { name, default })
        })
        .collect()
}
