//! Docker's list output: `--format` templates (`table ...`, `json`, `{{.Field}}`,
//! `{{json .Field}}`, `{{json .}}`) and columns padded as Go's tabwriter pads them.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::Value;

use crate::error::CliError;
use crate::output::template::Template;

/// One row of a listing: its fields by the names `--format` uses (`ID`, `Names`, ...).
pub type Row<'a> = BTreeMap<&'a str, String>;

/// The column names of a table, field to header (`("ID", "CONTAINER ID")`); a field not
/// named here is its own name in capitals, as Docker's.
pub type Headers = &'static [(&'static str, &'static str)];

/// The header of `field`'s column.
pub fn header(headers: Headers, field: &str) -> String {
    headers
        .iter()
        .find(|(f, _)| *f == field)
        .map_or_else(|| field.to_uppercase(), |(_, h)| (*h).to_string())
}

/// A `Labels` column: `k=v` pairs joined by commas, as Docker's listings print them.
pub fn labels_column(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Pads columns as Go's tabwriter does for Docker's tables (`tabwriter.NewWriter(out, 10, 1,
/// 3, ' ', 0)`): three spaces after the widest cell, at least 10 columns, the last column
/// unpadded.
pub fn tabulate(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 < r.len() {
                line.push_str(&format!("{c:<w$}", w = (widths[i] + 3).max(10)));
            } else {
                line.push_str(c);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Renders a `--format` template (Go's template language, output/template.rs) against a
/// row's fields, with `\t` and `\n` escapes as Docker's. `{{.Label "key"}}` reads the row's
/// `Labels` (`k=v,...`). A field the row does not have is an error, as in Go's templates.
pub fn render_template(tpl: &str, fields: &BTreeMap<&str, String>) -> Result<String, CliError> {
    let tpl = tpl.replace("\\t", "\t").replace("\\n", "\n");
    let uses_labels = tpl.contains(".Label \"");
    let tpl = rewrite_label_calls(&tpl);
    let mut obj: serde_json::Map<String, Value> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
        .collect();
    let labels: serde_json::Map<String, Value> = fields
        .get("Labels")
        .map(|l| {
            l.split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    if uses_labels {
        obj.insert("LabelMap".into(), Value::Object(labels));
    }
    let t = Template::parse(&tpl).map_err(|e| CliError::usage(e.to_string()))?;
    t.render(&Value::Object(obj))
        .map_err(|e| CliError::usage(e.to_string()))
}

/// `.Label "k"` (a method in Docker's Go types) as `(or (index .LabelMap "k") "")`.
fn rewrite_label_calls(tpl: &str) -> String {
    let mut out = String::new();
    let mut rest = tpl;
    while let Some(i) = rest.find(".Label \"") {
        out.push_str(&rest[..i]);
        let after = &rest[i + ".Label ".len()..];
        match after[1..].find('"') {
            Some(end) => {
                let key = &after[..end + 2];
                out.push_str(&format!("(or (index .LabelMap {key}) \"\")"));
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The text of `rows` through `--format`: `json` (one object a line), `table TEMPLATE`
/// (a header line from `headers`, then padded columns split at tabs) or a plain template
/// (one line a row).
pub fn format_rows(format: &str, rows: &[Row], headers: Headers) -> Result<String, CliError> {
    let mut out = String::new();
    if format == "json" {
        for r in rows {
            out.push_str(&render_template("{{json .}}", r)?);
            out.push('\n');
        }
        return Ok(out);
    }
    if let Some(tpl) = format.strip_prefix("table") {
        let tpl = tpl.trim_start();
        // Header: each action replaced by its column's name.
        let mut head_line = String::new();
        let mut rest = tpl;
        while let Some(s) = rest.find("{{") {
            head_line.push_str(&rest[..s]);
            let after = &rest[s + 2..];
            let Some(e) = after.find("}}") else { break };
            let action = after[..e].trim().trim_matches('-').trim();
            let name = action
                .trim_start_matches("json ")
                .trim()
                .trim_start_matches('.');
            // `{{.Label "k"}}`'s column is headed by the key.
            match name.strip_prefix("Label ") {
                Some(key) => head_line.push_str(key.trim().trim_matches('"')),
                None => head_line.push_str(&header(headers, name)),
            }
            rest = &after[e + 2..];
        }
        head_line.push_str(rest);
        let mut lines = vec![head_line.replace("\\t", "\t")];
        for r in rows {
            lines.push(render_template(tpl, r)?);
        }
        let table: Vec<Vec<String>> = lines
            .iter()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect();
        return Ok(tabulate(&table));
    }
    for r in rows {
        out.push_str(&render_template(format, r)?);
        out.push('\n');
    }
    Ok(out)
}

/// Prints `rows` through `--format` on stdout (see [`format_rows`]).
pub fn print_formatted(format: &str, rows: &[Row], headers: Headers) -> Result<(), CliError> {
    let text = format_rows(format, rows, headers)?;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADERS: Headers = &[("ID", "CONTAINER ID"), ("CreatedAt", "CREATED AT")];

    fn rows() -> Vec<Row<'static>> {
        vec![
            BTreeMap::from([
                ("ID", "0123456789ab".to_string()),
                ("Name", "web".into()),
                ("CreatedAt", "now".into()),
            ]),
            BTreeMap::from([
                ("ID", "ba9876543210".to_string()),
                ("Name", "database".into()),
                ("CreatedAt", "then".into()),
            ]),
        ]
    }

    #[test]
    fn templates_render() {
        let f = BTreeMap::from([
            ("Repository", "busybox".to_string()),
            ("Tag", "latest".into()),
        ]);
        assert_eq!(
            render_template("{{.Repository}}:{{.Tag}}", &f).unwrap(),
            "busybox:latest"
        );
        assert_eq!(
            render_template("{{ .Tag }}\\t{{json .Tag}}\\n", &f).unwrap(),
            "latest\t\"latest\"\n"
        );
        assert_eq!(
            render_template("{{json .}}", &f).unwrap(),
            r#"{"Repository":"busybox","Tag":"latest"}"#
        );
        assert_eq!(render_template("plain", &f).unwrap(), "plain");
        let f = BTreeMap::from([("Labels", "a=b,c=d".to_string())]);
        assert_eq!(
            render_template("{{.Label \"c\"}}|{{.Label \"x\"}}|{{upper .Labels}}", &f).unwrap(),
            "d||A=B,C=D"
        );
        let t = format_rows("table {{.Label \"a\"}}", &[f], HEADERS).unwrap();
        assert_eq!(t, "a\nb\n");
    }

    #[test]
    fn bad_templates_are_usage_errors() {
        let f = BTreeMap::from([("Tag", "latest".to_string())]);
        for bad in ["{{.Nope}}", "{{.Tag", "{{Tag}}", "{{json .Nope}}"] {
            let e = render_template(bad, &f).unwrap_err();
            assert_eq!(e.code, 125, "{bad}");
        }
        assert!(format_rows("table {{.Nope}}", &rows(), HEADERS).is_err());
        assert!(format_rows("{{.Nope}}", &rows(), HEADERS).is_err());
    }

    #[test]
    fn columns_pad_like_tabwriter() {
        let t = tabulate(&[
            vec!["REPOSITORY".into(), "TAG".into()],
            vec!["a".into(), "latest".into()],
        ]);
        assert_eq!(t, "REPOSITORY   TAG\na            latest\n");
        // Multi-byte cells count as characters; trailing blanks are trimmed.
        let t = tabulate(&[
            vec!["é".into(), "x".into()],
            vec!["ab".into(), String::new()],
        ]);
        assert_eq!(t, "é         x\nab\n");
        assert_eq!(tabulate(&[]), "");
    }

    #[test]
    fn table_format_has_headers() {
        let t = format_rows("table {{.ID}}\t{{.Name}}", &rows(), HEADERS).unwrap();
        assert_eq!(
            t,
            "CONTAINER ID   NAME\n0123456789ab   web\nba9876543210   database\n"
        );
        // The escaped form a shell passes, and a header from the table.
        let t = format_rows("table {{.Name}}\\t{{.CreatedAt}}", &rows(), HEADERS).unwrap();
        assert_eq!(
            t,
            "NAME       CREATED AT\nweb        now\ndatabase   then\n"
        );
        // An empty listing still has its header.
        let t = format_rows("table {{.ID}}\t{{.Name}}", &[], HEADERS).unwrap();
        assert_eq!(t, "CONTAINER ID   NAME\n");
    }

    #[test]
    fn json_and_plain_formats() {
        let t = format_rows("json", &rows(), HEADERS).unwrap();
        assert_eq!(
            t,
            "{\"CreatedAt\":\"now\",\"ID\":\"0123456789ab\",\"Name\":\"web\"}\n\
             {\"CreatedAt\":\"then\",\"ID\":\"ba9876543210\",\"Name\":\"database\"}\n"
        );
        assert_eq!(format_rows("json", &[], HEADERS).unwrap(), "");
        let t = format_rows("{{.Name}}:{{.ID}}", &rows(), HEADERS).unwrap();
        assert_eq!(t, "web:0123456789ab\ndatabase:ba9876543210\n");
    }

    #[test]
    fn headers_default_to_capitals() {
        assert_eq!(header(HEADERS, "ID"), "CONTAINER ID");
        assert_eq!(header(HEADERS, "Names"), "NAMES");
        assert_eq!(header(&[], "ID"), "ID");
    }
}
