//! Whole-file parser tests: every instruction, both escape characters, every error.

use std::time::Duration;

use super::*;

fn s(v: &str) -> String {
    v.to_string()
}

fn sv(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn ins(line: usize, original: &str, kind: InstructionKind) -> Instruction {
    Instruction {
        line,
        original: s(original),
        kind,
    }
}

const EVERYTHING: &str = r#"# syntax=docker/dockerfile:1
# escape=\

# a comment after the directives
ARG BASE=alpine:3.20
ARG TAG
FROM --platform=linux/amd64 ${BASE} AS Build
  run apk add --no-cache \
    # a comment inside a continuation
    gcc \

    make
RUN ["sh", "-c", "echo hi"]
COPY --from=0 --chown=1000:1000 --chmod=0755 --link a b /dst/
COPY ["with space", "/dst dir/"]
ADD --checksum=sha256:abc --chown=1 https://example.com/x.tgz /x/
ENV A=1 B="two words" C=c\ d
ENV LEGACY the rest of the line
ARG VERSION=1.0 OTHER
WORKDIR /src/$A
USER nobody:nogroup
EXPOSE 80 443/tcp 53/udp
VOLUME ["/data", "/logs"]
VOLUME /a /b
LABEL org.example.x="y z" k=v
CMD echo "$HOME"
ENTRYPOINT ["/bin/app", "--flag"]
STOPSIGNAL SIGTERM
SHELL ["/bin/bash", "-c"]
HEALTHCHECK --interval=5m --timeout=3s --start-period=10s --start-interval=1s --retries=4 \
  CMD curl -f http://localhost/ || exit 1
ONBUILD RUN make install
MAINTAINER someone <a@b.c>

from build as final
HEALTHCHECK NONE
CMD [ "broken json"
"#;

#[test]
fn every_instruction() {
    let df = parse(EVERYTHING).unwrap();
    assert_eq!(
        df.directives,
        Directives {
            escape: '\\',
            syntax: Some(s("docker/dockerfile:1")),
            check: None,
        }
    );
    assert_eq!(
        df.global_args,
        vec![
            ArgDecl {
                name: s("BASE"),
                default: Some(s("alpine:3.20")),
            },
            ArgDecl {
                name: s("TAG"),
                default: None,
            },
        ]
    );
    assert_eq!(df.stages.len(), 2);
    let build = &df.stages[0];
    assert_eq!(build.index, 0);
    assert_eq!(build.name.as_deref(), Some("build"));
    assert_eq!(build.from, "${BASE}");
    assert_eq!(build.from_line, 7);
    assert_eq!(build.platform.as_deref(), Some("linux/amd64"));
    let expected = vec![
        ins(
            8,
            "run apk add --no-cache     gcc     make",
            InstructionKind::Run {
                cmd: ShellOrExec::Shell(s("apk add --no-cache     gcc     make")),
            },
        ),
        ins(
            13,
            r#"RUN ["sh", "-c", "echo hi"]"#,
            InstructionKind::Run {
                cmd: ShellOrExec::Exec(sv(&["sh", "-c", "echo hi"])),
            },
        ),
        ins(
            14,
            "COPY --from=0 --chown=1000:1000 --chmod=0755 --link a b /dst/",
            InstructionKind::Copy {
                sources: sv(&["a", "b"]),
                dest: s("/dst/"),
                from: Some(s("0")),
                chown: Some(s("1000:1000")),
                chmod: Some(s("0755")),
                link: true,
            },
        ),
        ins(
            15,
            r#"COPY ["with space", "/dst dir/"]"#,
            InstructionKind::Copy {
                sources: sv(&["with space"]),
                dest: s("/dst dir/"),
                from: None,
                chown: None,
                chmod: None,
                link: false,
            },
        ),
        ins(
            16,
            "ADD --checksum=sha256:abc --chown=1 https://example.com/x.tgz /x/",
            InstructionKind::Add {
                sources: sv(&["https://example.com/x.tgz"]),
                dest: s("/x/"),
                chown: Some(s("1")),
                chmod: None,
                checksum: Some(s("sha256:abc")),
                link: false,
                keep_git_dir: false,
            },
        ),
        ins(
            17,
            r#"ENV A=1 B="two words" C=c\ d"#,
            InstructionKind::Env(vec![
                (s("A"), s("1")),
                (s("B"), s("\"two words\"")),
                (s("C"), s("c\\ d")),
            ]),
        ),
        ins(
            18,
            "ENV LEGACY the rest of the line",
            InstructionKind::Env(vec![(s("LEGACY"), s("the rest of the line"))]),
        ),
        ins(
            19,
            "ARG VERSION=1.0 OTHER",
            InstructionKind::Arg(vec![
                ArgDecl {
                    name: s("VERSION"),
                    default: Some(s("1.0")),
                },
                ArgDecl {
                    name: s("OTHER"),
                    default: None,
                },
            ]),
        ),
        ins(
            20,
            "WORKDIR /src/$A",
            InstructionKind::Workdir(s("/src/$A")),
        ),
        ins(
            21,
            "USER nobody:nogroup",
            InstructionKind::User(s("nobody:nogroup")),
        ),
        ins(
            22,
            "EXPOSE 80 443/tcp 53/udp",
            InstructionKind::Expose(sv(&["80", "443/tcp", "53/udp"])),
        ),
        ins(
            23,
            r#"VOLUME ["/data", "/logs"]"#,
            InstructionKind::Volume(sv(&["/data", "/logs"])),
        ),
        ins(
            24,
            "VOLUME /a /b",
            InstructionKind::Volume(sv(&["/a", "/b"])),
        ),
        ins(
            25,
            r#"LABEL org.example.x="y z" k=v"#,
            InstructionKind::Label(vec![(s("org.example.x"), s("\"y z\"")), (s("k"), s("v"))]),
        ),
        ins(
            26,
            r#"CMD echo "$HOME""#,
            InstructionKind::Cmd(ShellOrExec::Shell(s(r#"echo "$HOME""#))),
        ),
        ins(
            27,
            r#"ENTRYPOINT ["/bin/app", "--flag"]"#,
            InstructionKind::Entrypoint(ShellOrExec::Exec(sv(&["/bin/app", "--flag"]))),
        ),
        ins(
            28,
            "STOPSIGNAL SIGTERM",
            InstructionKind::StopSignal(s("SIGTERM")),
        ),
        ins(
            29,
            r#"SHELL ["/bin/bash", "-c"]"#,
            InstructionKind::Shell(sv(&["/bin/bash", "-c"])),
        ),
        ins(
            30,
            "HEALTHCHECK --interval=5m --timeout=3s --start-period=10s --start-interval=1s --retries=4   CMD curl -f http://localhost/ || exit 1",
            InstructionKind::Healthcheck(Healthcheck::Cmd(HealthcheckCmd {
                test: ShellOrExec::Shell(s("curl -f http://localhost/ || exit 1")),
                interval: Some(Duration::from_secs(300)),
                timeout: Some(Duration::from_secs(3)),
                start_period: Some(Duration::from_secs(10)),
                start_interval: Some(Duration::from_secs(1)),
                retries: Some(4),
            })),
        ),
        ins(
            32,
            "ONBUILD RUN make install",
            InstructionKind::Onbuild(Box::new(ins(
                32,
                "RUN make install",
                InstructionKind::Run {
                    cmd: ShellOrExec::Shell(s("make install")),
                },
            ))),
        ),
        ins(
            33,
            "MAINTAINER someone <a@b.c>",
            InstructionKind::Maintainer(s("someone <a@b.c>")),
        ),
    ];
    assert_eq!(build.instructions.len(), expected.len());
    for (got, want) in build.instructions.iter().zip(&expected) {
        assert_eq!(got, want);
    }

    let fin = &df.stages[1];
    assert_eq!(fin.index, 1);
    assert_eq!(fin.name.as_deref(), Some("final"));
    assert_eq!(fin.from, "build");
    assert_eq!(fin.from_line, 35);
    assert_eq!(fin.platform, None);
    assert_eq!(
        fin.instructions,
        vec![
            ins(
                36,
                "HEALTHCHECK NONE",
                InstructionKind::Healthcheck(Healthcheck::None),
            ),
            // Not valid JSON: Docker falls back to the shell form.
            ins(
                37,
                r#"CMD [ "broken json""#,
                InstructionKind::Cmd(ShellOrExec::Shell(s(r#"[ "broken json""#))),
            ),
        ]
    );

    // The raw words expand as Docker would with that stage's variables.
    let vars = |n: &str| match n {
        "A" => Some(s("1")),
        "HOME" => Some(s("/root")),
        _ => None,
    };
    let InstructionKind::Env(pairs) = &build.instructions[5].kind else {
        panic!("not ENV");
    };
    let expanded: Vec<String> = pairs
        .iter()
        .map(|(_, v)| expand(v, &vars, '\\').unwrap())
        .collect();
    assert_eq!(expanded, sv(&["1", "two words", "c d"]));
    assert_eq!(expand("/src/$A", &vars, '\\').unwrap(), "/src/1");
    assert!(build.instructions[5].kind.expands_variables());
    assert!(!build.instructions[0].kind.expands_variables());
    assert_eq!(build.instructions[0].kind.keyword(), "RUN");
}

const BACKTICK: &str = "# escape=`
FROM mcr.microsoft.com/windows/servercore
COPY testfile.txt c:\\
RUN dir c:\\ `
    /w
ENV PATH=C:\\bin;`$PATH
";

#[test]
fn backtick_escape() {
    let df = parse(BACKTICK).unwrap();
    assert_eq!(df.directives.escape, '`');
    assert_eq!(df.directives.syntax, None);
    let st = &df.stages[0];
    assert_eq!(st.from_line, 2);
    assert_eq!(
        st.instructions[0].kind,
        InstructionKind::Copy {
            sources: sv(&["testfile.txt"]),
            dest: s("c:\\"),
            from: None,
            chown: None,
            chmod: None,
            link: false,
        }
    );
    // A trailing backslash is not a continuation any more; the backtick is.
    assert_eq!(st.instructions[1].line, 4);
    assert_eq!(
        st.instructions[1].kind,
        InstructionKind::Run {
            cmd: ShellOrExec::Shell(s("dir c:\\     /w")),
        }
    );
    let InstructionKind::Env(pairs) = &st.instructions[2].kind else {
        panic!("not ENV");
    };
    assert_eq!(pairs, &vec![(s("PATH"), s("C:\\bin;`$PATH"))]);
    let vars = |n: &str| (n == "PATH").then(|| s("x"));
    assert_eq!(expand(&pairs[0].1, &vars, '`').unwrap(), "C:\\bin;$PATH");
}

#[test]
fn directives_stop_at_the_first_other_line() {
    // After a comment, `# escape=` is a comment, so `\` still continues lines.
    let df = parse("# hello\n# escape=`\nFROM a\nRUN x \\\n y\n").unwrap();
    assert_eq!(df.directives.escape, '\\');
    assert_eq!(
        df.stages[0].instructions[0].kind,
        InstructionKind::Run {
            cmd: ShellOrExec::Shell(s("x  y")),
        }
    );
    // Unknown directives end the directive block too; spacing and case do not matter.
    let df = parse("#  EsCaPe = `  \nFROM a\n").unwrap();
    assert_eq!(df.directives.escape, '`');
    let df = parse("# unknown=x\n# escape=`\nFROM a\n").unwrap();
    assert_eq!(df.directives.escape, '\\');
    let df = parse("\n# escape=`\nFROM a\n").unwrap();
    assert_eq!(df.directives.escape, '\\');
}

#[test]
fn continuations_and_whitespace() {
    // Blanks after the escape still continue the line; CRLF, BOM and indentation are fine.
    let df = parse("\u{feff}FROM a\r\n  RUN a \\  \r\n\tb\r\ncopy x y\\\n").unwrap();
    let st = &df.stages[0];
    assert_eq!(
        st.instructions[0].kind,
        InstructionKind::Run {
            cmd: ShellOrExec::Shell(s("a \tb")),
        }
    );
    assert_eq!(st.instructions[1].line, 4);
    // An escape at the end of the file ends the instruction.
    assert_eq!(
        st.instructions[1].kind,
        InstructionKind::Copy {
            sources: sv(&["x"]),
            dest: s("y"),
            from: None,
            chown: None,
            chmod: None,
            link: false,
        }
    );
}

#[test]
fn from_forms() {
    let df = parse("ARG V=1\nFROM busybox:${V}\nFROM scratch AS a.b-c_1\nFROM a.b-c_1\n").unwrap();
    assert_eq!(df.stages[0].from, "busybox:${V}");
    assert_eq!(df.stages[0].name, None);
    assert_eq!(df.stages[1].name.as_deref(), Some("a.b-c_1"));
    assert_eq!(df.stages[2].index, 2);
}

#[test]
fn env_quoting_forms() {
    let df = parse("FROM a\nENV K='single $x' E=\"\" N=\"a\\\"b\"\n").unwrap();
    let InstructionKind::Env(pairs) = &df.stages[0].instructions[0].kind else {
        panic!("not ENV");
    };
    let vals: Vec<String> = pairs
        .iter()
        .map(|(_, v)| expand(v, &|_| Some(s("X")), '\\').unwrap())
        .collect();
    assert_eq!(vals, sv(&["single $x", "", "a\"b"]));
}

#[track_caller]
fn fails(text: &str, line: usize, message: &str) {
    let err = parse(text).expect_err(text);
    assert_eq!(
        err,
        ParseError::Syntax {
            line,
            message: s(message),
        },
        "{text:?}"
    );
    assert_eq!(err.to_string(), format!("Dockerfile:{line}: {message}"));
}

#[test]
fn errors_name_their_line() {
    fails("", 1, "file with no instructions");
    fails("# only\n\n# comments\n", 3, "file with no instructions");
    fails("ARG A\n", 1, "dockerfile contains no stages to build");
    fails("FROM a\n\nFORM b\n", 3, "unknown instruction: FORM");
    fails("RUN x\nFROM a\n", 1, "no build stage in current context");
    fails(
        "FROM a\nCOPY x\n",
        2,
        "COPY requires at least two arguments",
    );
    fails(
        "FROM a\nADD [\"x\"]\n",
        2,
        "ADD requires at least two arguments",
    );
    fails("FROM a\nCOPY --nope=1 a b\n", 2, "unknown flag: --nope");
    fails(
        "FROM a\nCOPY --from a b\n",
        2,
        "missing a value on flag: --from",
    );
    fails("FROM a\nENV --x=1 A=b\n", 2, "unknown flag: --x");
    fails("FROM --plat=x a\n", 1, "unknown flag: --plat");
    fails(
        "FROM a\nRUN --mount=type=cache,target=/x make\n",
        2,
        "RUN --mount is not supported yet",
    );
    fails(
        "FROM a\nRUN --network=none x\n",
        2,
        "RUN --network is not supported yet",
    );
    fails(
        "FROM a\nRUN <<EOF\necho\nEOF\n",
        2,
        "heredocs are not supported yet",
    );
    fails(
        "FROM a\nCOPY <<-EOT /x\nEOT\n",
        2,
        "heredocs are not supported yet",
    );
    fails(
        "FROM a b\n",
        1,
        "FROM requires either one or three arguments",
    );
    fails("FROM\n", 1, "FROM requires either one or three arguments");
    fails(
        "FROM a AS 1x\n",
        1,
        "invalid name for build stage: \"1x\", name can't start with a number or contain symbols",
    );
    fails(
        "FROM a AS x$\n",
        1,
        "invalid name for build stage: \"x$\", name can't start with a number or contain symbols",
    );
    fails(
        "FROM a AS x\nFROM b AS X\n",
        2,
        "duplicate stage name \"x\"",
    );
    fails("FROM a\nENV ONLYKEY\n", 2, "ENV must have two arguments");
    fails(
        "FROM a\nENV A=1 B\n",
        2,
        "Syntax error - can't find = in \"B\". Must be of the form: name=value",
    );
    fails("FROM a\nLABEL =x\n", 2, "LABEL names can not be blank");
    fails("FROM a\nARG =x\n", 2, "ARG names can not be blank");
    fails("FROM a\nARG\n", 2, "ARG requires at least one argument");
    fails(
        "FROM a\nWORKDIR\n",
        2,
        "WORKDIR requires exactly one argument",
    );
    fails(
        "FROM a\nEXPOSE\n",
        2,
        "EXPOSE requires at least one argument",
    );
    fails(
        "FROM a\nVOLUME [\"\"]\n",
        2,
        "VOLUME specified can not be an empty string",
    );
    fails("FROM a\nRUN\n", 2, "RUN requires at least one argument");
    fails(
        "FROM a\nRUN [\"a\", 1]\n",
        2,
        "when using JSON array syntax, arrays must be comprised of strings only",
    );
    fails(
        "FROM a\nSHELL /bin/sh -c\n",
        2,
        "SHELL requires the arguments to be in JSON form",
    );
    fails(
        "FROM a\nSHELL []\n",
        2,
        "SHELL requires at least one argument",
    );
    fails(
        "FROM a\nHEALTHCHECK NONE x\n",
        2,
        "HEALTHCHECK NONE takes no arguments",
    );
    fails(
        "FROM a\nHEALTHCHECK CMD\n",
        2,
        "Missing command after HEALTHCHECK CMD",
    );
    fails(
        "FROM a\nHEALTHCHECK RUN x\n",
        2,
        "Unknown type \"RUN\" in HEALTHCHECK (try CMD)",
    );
    fails(
        "FROM a\nHEALTHCHECK --interval=-1s CMD x\n",
        2,
        "Interval \"interval\" cannot be negative",
    );
    fails(
        "FROM a\nHEALTHCHECK --retries=-1 CMD x\n",
        2,
        "--retries cannot be negative",
    );
    fails(
        "FROM a\nONBUILD ONBUILD RUN x\n",
        2,
        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
    );
    fails(
        "FROM a\nONBUILD FROM b\n",
        2,
        "FROM isn't allowed as an ONBUILD trigger",
    );
    fails("FROM a\nONBUILD BOGUS x\n", 2, "unknown instruction: BOGUS");
    fails(
        "# escape=x\nFROM a\n",
        1,
        "invalid escape token 'x' does not match ` or \\",
    );
    fails(
        "# escape=`\n# escape=`\nFROM a\n",
        2,
        "only one escape parser directive can be used",
    );
    // A multi-line instruction reports the line it starts on.
    fails(
        "FROM a\nRUN ok\nCOPY \\\n  \\\n  onlyone\n",
        3,
        "COPY requires at least two arguments",
    );
}

#[test]
fn fuzz_entry_survives_odd_input() {
    for input in [
        &b""[..],
        b"\xff\xfe",
        b"FROM a\nRUN ${\n",
        b"FROM a\nENV A=\"unterminated\n",
        b"FROM a\nCOPY --chown=\"x \\",
        b"# escape=`\nFROM a `\n`\n",
        b"FROM a\nONBUILD\n",
        b"FROM a\nLABEL ${a:-${b:-${c}}} x\n",
        b"FROM a\nHEALTHCHECK --interval=99999999999999999h CMD x\n",
        b"FROM a\nEXPOSE \xc3\xa9\n",
    ] {
        fuzz_parse(input);
    }
    let deep = format!(
        "FROM a\nENV A={}x{}\n",
        "${a:-".repeat(500),
        "}".repeat(500)
    );
    fuzz_parse(deep.as_bytes());
}
