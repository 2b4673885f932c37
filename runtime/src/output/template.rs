//! Go's text/template, the subset Docker's `--format` and `inspect -f` users write, evaluated
//! over JSON: `{{.A.B}}`, pipelines (`{{.Name | upper}}`), `if`/`else`/`range`/`with`/`end`,
//! `{{-`/`-}}` trimming, string, number and boolean literals, and Docker's functions (`json`,
//! `upper`, `lower`, `title`, `join`, `split`, `truncate`, `pad`, `println`) with Go's
//! (`printf`, `print`, `index`, `len`, `eq`, `ne`, `not`, `and`, `or`).
//!
//! Written here rather than taken from a crate: the Go-template crates for Rust print maps
//! and lists in Rust's Debug form and answer `<no value>` for a struct's missing field, where
//! scripts rely on Go's `map[k:v]`, `[a b]` and an error.

use serde_json::Value;

/// A template that failed to parse or to execute: Docker's message text.
#[derive(Debug, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "template: {}", self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError(msg.into()))
}

/// One parsed piece of a template.
#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Vec<Cmd>),
    If(Vec<Cmd>, Vec<Node>, Vec<Node>),
    Range(Vec<Cmd>, Vec<Node>, Vec<Node>),
    With(Vec<Cmd>, Vec<Node>, Vec<Node>),
}

/// One command of a pipeline: a function with arguments, or a lone operand.
#[derive(Debug, Clone)]
enum Cmd {
    Call(String, Vec<Arg>),
    Operand(Arg),
}

#[derive(Debug, Clone)]
enum Arg {
    /// `.A.B` (empty path: `.`); `$` starts from the root.
    Field {
        root: bool,
        path: Vec<String>,
    },
    Lit(Value),
    Sub(Vec<Cmd>),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

impl Template {
    /// Parses `text` (with Docker's `\t` and `\n` escapes already applied by the caller or not).
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let tokens = split_actions(text)?;
        let mut pos = 0;
        let (nodes, end) = parse_list(&tokens, &mut pos)?;
        if let Some(e) = end {
            return err(format!("unexpected {{{{{e}}}}}"));
        }
        Ok(Template { nodes })
    }

    /// Renders the template against `data`.
    pub fn render(&self, data: &Value) -> Result<String, TemplateError> {
        let mut out = String::new();
        exec_list(&self.nodes, data, data, &mut out)?;
        Ok(out)
    }
}

/// Text and action pieces of a template, with `{{-` and `-}}` trimming applied.
enum Piece {
    Text(String),
    Action(String),
}

fn split_actions(text: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = text;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut before = &rest[..start];
        if trim_next {
            before = before.trim_start();
        }
        let after = &rest[start + 2..];
        let end = match after.find("}}") {
            Some(e) => e,
            None => return err("unclosed action"),
        };
        let mut action = &after[..end];
        if let Some(a) = action.strip_prefix("- ") {
            before = before.trim_end();
            action = a;
        }
        trim_next = false;
        if let Some(a) = action.strip_suffix(" -") {
            trim_next = true;
            action = a;
        }
        if !before.is_empty() {
            pieces.push(Piece::Text(before.to_string()));
        }
        let action = action.trim();
        if !action.starts_with("/*") {
            pieces.push(Piece::Action(action.to_string()));
        }
        rest = &after[end + 2..];
    }
    let rest = if trim_next { rest.trim_start() } else { rest };
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Ok(pieces)
}

/// Parses nodes up to an `{{else}}` or `{{end}}`, which is returned.
fn parse_list(
    pieces: &[Piece],
    pos: &mut usize,
) -> Result<(Vec<Node>, Option<String>), TemplateError> {
    let mut nodes = Vec::new();
    while *pos < pieces.len() {
        let piece = &pieces[*pos];
        *pos += 1;
        match piece {
            Piece::Text(t) => nodes.push(Node::Text(t.clone())),
            Piece::Action(a) => {
                let words = lex(a)?;
                match words.first().map(String::as_str) {
                    Some("end") | Some("else") => return Ok((nodes, Some(a.clone()))),
                    Some(kw @ ("if" | "range" | "with")) => {
                        let pipe = parse_pipeline(&words[1..])?;
                        let (body, end) = parse_list(pieces, pos)?;
                        let alt = match end.as_deref() {
                            Some("end") => Vec::new(),
                            Some("else") => {
                                let (alt, end) = parse_list(pieces, pos)?;
                                if end.as_deref() != Some("end") {
                                    return err(format!("missing {{{{end}}}} of {kw}"));
                                }
                                alt
                            }
                            _ => return err(format!("missing {{{{end}}}} of {kw}")),
                        };
                        nodes.push(match kw {
                            "if" => Node::If(pipe, body, alt),
                            "range" => Node::Range(pipe, body, alt),
                            _ => Node::With(pipe, body, alt),
                        });
                    }
                    Some(_) => nodes.push(Node::Action(parse_pipeline(&words)?)),
                    None => return err("missing value for command"),
                }
            }
        }
    }
    Ok((nodes, None))
}

/// Words of an action: quoted strings (kept with their quotes), `|`, parentheses, others.
fn lex(action: &str) -> Result<Vec<String>, TemplateError> {
    let mut words = Vec::new();
    let mut chars = action.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '|' | '(' | ')' => {
                words.push(c.to_string());
                chars.next();
            }
            '"' | '`' => {
                let q = c;
                let mut w = String::from(q);
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    w.push(c);
                    if c == '\\' && q == '"' {
                        if let Some(n) = chars.next() {
                            w.push(n);
                        }
                    } else if c == q {
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    return err("unterminated quoted string");
                }
                words.push(w);
            }
            _ => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '|' | '(' | ')') {
                        break;
                    }
                    w.push(c);
                    chars.next();
                }
                words.push(w);
            }
        }
    }
    Ok(words)
}

fn parse_pipeline(words: &[String]) -> Result<Vec<Cmd>, TemplateError> {
    let mut cmds = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let mut args = Vec::new();
        while i < words.len() && words[i] != "|" {
            if words[i] == "(" {
                let mut depth = 0;
                let start = i + 1;
                while i < words.len() {
                    match words[i].as_str() {
                        "(" => depth += 1,
                        ")" => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                if depth != 0 {
                    return err("unclosed left paren");
                }
                args.push(Arg::Sub(parse_pipeline(&words[start..i])?));
                i += 1;
                continue;
            }
            args.push(parse_arg(&words[i])?);
            i += 1;
        }
        i += 1;
        let cmd = match args.first() {
            None => return err("missing command in pipeline"),
            Some(Arg::Lit(Value::String(name))) if name.starts_with('\u{0}') => {
                Cmd::Call(name[1..].to_string(), args[1..].to_vec())
            }
            Some(_) if args.len() == 1 => Cmd::Operand(args.remove(0)),
            Some(_) => return err("can't give argument to non-function"),
        };
        cmds.push(cmd);
    }
    Ok(cmds)
}

/// An argument word; a function name comes back as a string marked with a NUL prefix.
fn parse_arg(w: &str) -> Result<Arg, TemplateError> {
    if w == "." {
        return Ok(Arg::Field {
            root: false,
            path: Vec::new(),
        });
    }
    if let Some(p) = w.strip_prefix('$') {
        let path = p.split('.').filter(|s| !s.is_empty()).map(str::to_string);
        return Ok(Arg::Field {
            root: true,
            path: path.collect(),
        });
    }
    if let Some(p) = w.strip_prefix('.') {
        return Ok(Arg::Field {
            root: false,
            path: p.split('.').map(str::to_string).collect(),
        });
    }
    if w.starts_with('"') {
        return serde_json::from_str::<String>(w)
            .map(|s| Arg::Lit(Value::String(s)))
            .or_else(|_| err(format!("bad string {w}")));
    }
    if let Some(s) = w.strip_prefix('`') {
        return Ok(Arg::Lit(Value::String(s.trim_end_matches('`').to_string())));
    }
    match w {
        "true" => return Ok(Arg::Lit(Value::Bool(true))),
        "false" => return Ok(Arg::Lit(Value::Bool(false))),
        "nil" => return Ok(Arg::Lit(Value::Null)),
        _ => {}
    }
    if let Ok(n) = w.parse::<i64>() {
        return Ok(Arg::Lit(Value::from(n)));
    }
    if let Ok(n) = w.parse::<f64>() {
        return Ok(Arg::Lit(Value::from(n)));
    }
    if w.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Ok(Arg::Lit(Value::String(format!("\u{0}{w}"))));
    }
    err(format!("unexpected {w:?} in command"))
}

fn exec_list(
    nodes: &[Node],
    dot: &Value,
    root: &Value,
    out: &mut String,
) -> Result<(), TemplateError> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => out.push_str(&print(&eval_pipeline(p, dot, root)?)),
            Node::If(p, body, alt) => {
                let v = eval_pipeline(p, dot, root)?;
                exec_list(if truthy(&v) { body } else { alt }, dot, root, out)?;
            }
            Node::With(p, body, alt) => {
                let v = eval_pipeline(p, dot, root)?;
                if truthy(&v) {
                    exec_list(body, &v, root, out)?;
                } else {
                    exec_list(alt, dot, root, out)?;
                }
            }
            Node::Range(p, body, alt) => {
                let v = eval_pipeline(p, dot, root)?;
                let items: Vec<Value> = match &v {
                    Value::Array(a) => a.clone(),
                    Value::Object(m) => m.values().cloned().collect(),
                    Value::Null => Vec::new(),
                    other => return err(format!("range can't iterate over {}", print(other))),
                };
                if items.is_empty() {
                    exec_list(alt, dot, root, out)?;
                }
                for item in &items {
                    exec_list(body, item, root, out)?;
                }
            }
        }
    }
    Ok(())
}

fn eval_pipeline(cmds: &[Cmd], dot: &Value, root: &Value) -> Result<Value, TemplateError> {
    let mut prev: Option<Value> = None;
    for c in cmds {
        let v = match c {
            Cmd::Operand(a) => {
                if prev.is_some() {
                    return err("can't give argument to non-function");
                }
                eval_arg(a, dot, root)?
            }
            Cmd::Call(name, args) => {
                let mut vals = args
                    .iter()
                    .map(|a| eval_arg(a, dot, root))
                    .collect::<Result<Vec<_>, _>>()?;
                if let Some(p) = prev.take() {
                    vals.push(p);
                }
                call(name, &vals)?
            }
        };
        prev = Some(v);
    }
    Ok(prev.unwrap_or(Value::Null))
}

fn eval_arg(a: &Arg, dot: &Value, root: &Value) -> Result<Value, TemplateError> {
    match a {
        Arg::Lit(Value::String(s)) if s.starts_with('\u{0}') => call(&s[1..], &[]),
        Arg::Lit(v) => Ok(v.clone()),
        Arg::Sub(p) => eval_pipeline(p, dot, root),
        Arg::Field {
            root: from_root,
            path,
        } => {
            let mut v = if *from_root { root } else { dot };
            for key in path {
                match v {
                    Value::Object(m) => match m.get(key) {
                        Some(x) => v = x,
                        // A struct's field (Docker's types are capitalised structs) must
                        // exist; a map's missing key is Go's "<no value>".
                        None if is_struct(m) => {
                            return err(format!("can't evaluate field {key}"));
                        }
                        None => return Ok(Value::String("<no value>".into())),
                    },
                    Value::Null => return Ok(Value::Null),
                    _ => return err(format!("can't evaluate field {key} in type {}", kind(v))),
                }
            }
            Ok(v.clone())
        }
    }
}

/// Whether a JSON object stands for one of Docker's structs (every key capitalised) rather
/// than a map of user data (labels, options).
fn is_struct(m: &serde_json::Map<String, Value>) -> bool {
    !m.is_empty()
        && m.keys().all(|k| {
            k.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && !k.contains(['.', '/', '-', '='])
        })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
        Value::Null => "nil",
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// A value as Go's fmt prints it with `%v`: `[a b]`, `map[k:v]`, `<nil>`.
pub fn print(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(print).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let inner = keys
                .iter()
                .map(|k| format!("{k}:{}", print(&m[*k])))
                .collect::<Vec<_>>();
            if is_struct(m) {
                format!(
                    "{{{}}}",
                    m.values().map(print).collect::<Vec<_>>().join(" ")
                )
            } else {
                format!("map[{}]", inner.join(" "))
            }
        }
    }
}

fn str_arg<'a>(name: &str, args: &'a [Value], i: usize) -> Result<&'a str, TemplateError> {
    match args.get(i) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => err(format!(
            "{name}: argument {} is a {}, not a string",
            i + 1,
            kind(other)
        )),
        None => err(format!("{name}: missing argument")),
    }
}

fn int_arg(name: &str, args: &[Value], i: usize) -> Result<i64, TemplateError> {
    match args.get(i) {
        Some(Value::Number(n)) => n
            .as_i64()
            .map_or_else(|| err(format!("{name}: not an integer")), Ok),
        _ => err(format!("{name}: argument {} must be an integer", i + 1)),
    }
}

fn call(name: &str, args: &[Value]) -> Result<Value, TemplateError> {
    let s = |v: String| Ok(Value::String(v));
    match name {
        "json" => s(match args.first() {
            Some(v) => serde_json::to_string(v).unwrap_or_default(),
            None => return err("json: missing argument"),
        }),
        "upper" => s(str_arg(name, args, 0)?.to_uppercase()),
        "lower" => s(str_arg(name, args, 0)?.to_lowercase()),
        "title" => s(str_arg(name, args, 0)?
            .split(' ')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" ")),
        "join" => {
            let sep = str_arg(name, args, 1)?;
            match args.first() {
                Some(Value::Array(a)) => s(a.iter().map(print).collect::<Vec<_>>().join(sep)),
                Some(Value::Null) => s(String::new()),
                _ => err("join: the first argument must be a list"),
            }
        }
        "split" => Ok(Value::Array(
            str_arg(name, args, 0)?
                .split(str_arg(name, args, 1)?)
                .map(|p| Value::String(p.to_string()))
                .collect(),
        )),
        "truncate" => {
            let n = usize::try_from(int_arg(name, args, 1)?).unwrap_or(0);
            s(str_arg(name, args, 0)?.chars().take(n).collect())
        }
        "pad" => {
            let (l, r) = (int_arg(name, args, 1)?, int_arg(name, args, 2)?);
            let pad = |n: i64| " ".repeat(usize::try_from(n).unwrap_or(0));
            s(format!(
                "{}{}{}",
                pad(l),
                print(args.first().unwrap_or(&Value::Null)),
                pad(r)
            ))
        }
        "print" => s(args.iter().map(print).collect::<Vec<_>>().join("")),
        "println" => s(args.iter().map(print).collect::<Vec<_>>().join(" ") + "\n"),
        "printf" => s(printf(str_arg(name, args, 0)?, &args[1..])?),
        "len" => match args.first() {
            Some(Value::Array(a)) => Ok(Value::from(a.len())),
            Some(Value::Object(m)) => Ok(Value::from(m.len())),
            Some(Value::String(x)) => Ok(Value::from(x.len())),
            _ => err("len of an unsupported value"),
        },
        "index" => {
            let mut v = args.first().cloned().unwrap_or(Value::Null);
            for k in &args[1..] {
                v = match (&v, k) {
                    (Value::Object(m), Value::String(k)) => {
                        m.get(k).cloned().unwrap_or(Value::Null)
                    }
                    (Value::Array(a), Value::Number(i)) => {
                        let i = i.as_u64().and_then(|i| usize::try_from(i).ok());
                        match i.and_then(|i| a.get(i)) {
                            Some(x) => x.clone(),
                            None => return err("index out of range"),
                        }
                    }
                    (Value::Null, _) => Value::Null,
                    _ => return err("can't index item"),
                };
            }
            Ok(v)
        }
        "eq" | "ne" => {
            let (a, b) = (args.first(), args.get(1));
            if a.is_none() || b.is_none() {
                return err(format!("{name}: missing argument"));
            }
            let same = args[1..].iter().any(|b| Some(b) == a);
            Ok(Value::Bool(if name == "eq" { same } else { !same }))
        }
        "not" => Ok(Value::Bool(!args.first().is_some_and(truthy))),
        "and" => Ok(args
            .iter()
            .find(|v| !truthy(v))
            .or(args.last())
            .cloned()
            .unwrap_or(Value::Null)),
        "or" => Ok(args
            .iter()
            .find(|v| truthy(v))
            .or(args.last())
            .cloned()
            .unwrap_or(Value::Null)),
        _ => err(format!("function {name:?} not defined")),
    }
}

/// Go's Printf for the verbs templates use: `%s %v %d %q %%` and widths like `%-10s`.
fn printf(fmt: &str, args: &[Value]) -> Result<String, TemplateError> {
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    let mut next = args.iter();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&d) = chars.peek() {
            if d == '-' || d.is_ascii_digit() {
                spec.push(d);
                chars.next();
            } else {
                break;
            }
        }
        let verb = chars.next().unwrap_or('%');
        if verb == '%' {
            out.push('%');
            continue;
        }
        let text = match (verb, next.next()) {
            (_, None) => format!("%!{verb}(MISSING)"),
            ('q', Some(v)) => serde_json::to_string(&Value::String(print(v))).unwrap_or_default(),
            (_, Some(v)) => print(v),
        };
        let width: usize = spec.trim_start_matches('-').parse().unwrap_or(0);
        if spec.starts_with('-') {
            out.push_str(&format!("{text:<width$}"));
        } else {
            out.push_str(&format!("{text:>width$}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(t: &str, v: &Value) -> Result<String, TemplateError> {
        Template::parse(t)?.render(v)
    }

    #[test]
    fn fields_functions_and_go_printing() {
        let v = json!({"Name": "/c1", "Config": {"Cmd": ["echo", "x y"], "Labels": {"a": "b", "com.x": "y"}},
                       "State": {"Running": false, "ExitCode": 137}, "Binds": null});
        assert_eq!(r("{{.Name}} {{.State.ExitCode}}", &v).unwrap(), "/c1 137");
        assert_eq!(r("{{json .Config.Cmd}}", &v).unwrap(), r#"["echo","x y"]"#);
        assert_eq!(r("{{.Config.Cmd}}", &v).unwrap(), "[echo x y]");
        assert_eq!(r("{{.Config.Labels}}", &v).unwrap(), "map[a:b com.x:y]");
        assert_eq!(r("{{index .Config.Labels \"com.x\"}}", &v).unwrap(), "y");
        assert_eq!(r("{{.Config.Labels.nope}}", &v).unwrap(), "<no value>");
        assert_eq!(r("{{printf \"%s-x\" .Name}}", &v).unwrap(), "/c1-x");
        assert_eq!(
            r("{{printf \"%-5s|%3d\" \"ab\" 7}}", &v).unwrap(),
            "ab   |  7"
        );
        assert_eq!(
            r("{{upper .Name}} {{lower \"AB\"}} {{.Name | upper}}", &v).unwrap(),
            "/C1 ab /C1"
        );
        assert_eq!(r("{{join .Config.Cmd \",\"}}", &v).unwrap(), "echo,x y");
        assert_eq!(
            r("{{range .Config.Cmd}}[{{.}}]{{end}}", &v).unwrap(),
            "[echo][x y]"
        );
        assert_eq!(
            r("{{if .State.Running}}up{{else}}down{{end}}", &v).unwrap(),
            "down"
        );
        assert_eq!(r("{{with .State}}{{.ExitCode}}{{end}}", &v).unwrap(), "137");
        assert_eq!(
            r("{{len .Config.Cmd}} {{json .Binds}}", &v).unwrap(),
            "2 null"
        );
        assert_eq!(r("a {{- \" b \" -}} c", &v).unwrap(), "a b c");
        assert_eq!(
            r("{{eq .State.ExitCode 137}} {{not .State.Running}}", &v).unwrap(),
            "true true"
        );
        assert_eq!(r("{{(index .Config.Cmd 1) | upper}}", &v).unwrap(), "X Y");
        assert_eq!(
            r("{{$.Name}}{{range .Config.Cmd}}{{$.Name}}{{end}}", &v).unwrap(),
            "/c1/c1/c1"
        );
    }

    #[test]
    fn errors_as_go_gives_them() {
        let v = json!({"Name": "x", "State": {"Status": "running"}});
        assert!(r("{{.Nope}}", &v).is_err());
        assert!(r("{{.State.Nope}}", &v).is_err());
        assert!(r("{{.Name", &v).is_err());
        assert!(r("{{if .Name}}x", &v).is_err());
        assert!(r("{{end}}", &v).is_err());
        assert!(r("{{nosuchfunc .Name}}", &v).is_err());
        assert!(r("{{\"unterminated}}", &v).is_err());
        assert!(r("{{.Name.Deeper}}", &v).is_err());
    }
}
