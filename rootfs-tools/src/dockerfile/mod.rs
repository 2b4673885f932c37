//! Dockerfiles, read the way Docker's BuildKit frontend reads them, into a typed AST for
//! the build engine, plus `.dockerignore` and Docker's variable expansion.
//!
//! The parser keeps words as written: quotes, escapes and `$VARS` in the arguments of
//! `ENV`, `LABEL`, `ARG`, `COPY`, `ADD`, `FROM`, `WORKDIR`, `USER`, `EXPOSE`, `VOLUME`
//! and `STOPSIGNAL` are resolved at build time with [`expand`], which (like Docker's
//! `ProcessWord`) also removes quotes; `RUN`, `CMD` and `ENTRYPOINT` are left to the shell.

mod ast;
mod error;
mod expand;
mod healthcheck;
mod ignore;
mod instruction;
mod lines;
mod pattern;
mod words;

#[cfg(test)]
mod tests;

pub use ast::{
    ArgDecl, Dockerfile, Healthcheck, HealthcheckCmd, Instruction, InstructionKind, ShellOrExec,
    Stage,
};
pub use error::ParseError;
pub use expand::expand;
pub use ignore::DockerIgnore;
pub use lines::Directives;

/// Parses a whole Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let (directives, lines) = lines::split(text)?;
    let Some(last) = lines.last() else {
        return Err(ParseError::at(
            text.lines().count().max(1),
            "file with no instructions",
        ));
    };
    let last_line = last.line;
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for l in &lines {
        match instruction::parse_line(l, directives.escape)? {
            instruction::Parsed::From {
                image,
                name,
                platform,
            } => {
                if let Some(n) = &name
                    && stages.iter().any(|s| s.name.as_deref() == Some(n))
                {
                    return Err(ParseError::at(
                        l.line,
                        format!("duplicate stage name {n:?}"),
                    ));
                }
                stages.push(Stage {
                    index: stages.len(),
                    name,
                    from: image,
                    from_line: l.line,
                    platform,
                    instructions: Vec::new(),
                });
            }
            instruction::Parsed::Other(ins) => match stages.last_mut() {
                Some(stage) => stage.instructions.push(ins),
                None => match ins.kind {
                    InstructionKind::Arg(args) => global_args.extend(args),
                    _ => {
                        return Err(ParseError::at(l.line, "no build stage in current context"));
                    }
                },
            },
        }
    }
    if stages.is_empty() {
        return Err(ParseError::at(
            last_line,
            "dockerfile contains no stages to build",
        ));
    }
    Ok(Dockerfile {
        directives,
        global_args,
        stages,
    })
}

/// The entry point of the `dockerfile_parse` fuzz target: any text, parsed, must give an
/// AST or an error with a line inside the file, never a panic; every word of the AST must
/// expand (or fail) without panicking too.
pub fn fuzz_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.lines().count().max(1);
    match parse(text) {
        Ok(df) => {
            let vars = |name: &str| (name == "SET").then(|| "value".to_string());
            for stage in &df.stages {
                let _ = expand(&stage.from, &vars, df.directives.escape);
                for ins in &stage.instructions {
                    assert!(ins.line >= 1 && ins.line <= lines);
                    let _ = expand(&ins.original, &vars, df.directives.escape);
                }
            }
            let ignore = DockerIgnore::parse(text);
            for l in text.lines().take(16) {
                let _ = ignore.is_excluded(l);
            }
        }
        Err(e) => {
            if let Some(line) = e.line() {
                assert!(
                    line >= 1 && line <= lines,
                    "error line {line} outside the file"
                );
            }
        }
    }
}
