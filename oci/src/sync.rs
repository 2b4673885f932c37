//! The one-line messages between a command and the relay it started, over inherited pipes:
//! `ok [detail]` or `error CODE message`.

use std::io::{BufRead, BufReader, Read, Write};

use crate::error::RuntimeError;

/// What the other side said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Done; the rest of the line.
    Ok(String),
    /// Failed with an exit code and a message.
    Failed(i32, String),
}

/// Writes `reply` as one line.
pub fn send(mut w: impl Write, reply: &Reply) {
    let line = match reply {
        Reply::Ok(detail) => format!("ok {}\n", detail.replace('\n', " ")),
        Reply::Failed(code, msg) => format!("error {code} {}\n", msg.replace('\n', " ")),
    };
    let _ = w.write_all(line.as_bytes()).and_then(|()| w.flush());
}

/// Reads one reply; end of file (the other side died) is an error.
pub fn receive(r: impl Read) -> Result<Reply, RuntimeError> {
    let mut line = String::new();
    BufReader::new(r.take(64 << 10))
        .read_line(&mut line)
        .map_err(|e| RuntimeError::Other(format!("cannot read from the relay: {e}")))?;
    parse(line.trim_end_matches('\n'))
}

fn parse(line: &str) -> Result<Reply, RuntimeError> {
    if let Some(rest) = line.strip_prefix("ok") {
        return Ok(Reply::Ok(rest.trim_start().to_string()));
    }
    if let Some(rest) = line.strip_prefix("error ") {
        let (code, msg) = rest.split_once(' ').unwrap_or((rest, ""));
        return Ok(Reply::Failed(code.parse().unwrap_or(1), msg.to_string()));
    }
    if line.is_empty() {
        return Err(RuntimeError::Other(
            "the container's relay process ended before it was ready".into(),
        ));
    }
    Err(RuntimeError::Other(format!(
        "unexpected answer from the relay: {line:?}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_eof() {
        for r in [
            Reply::Ok(String::new()),
            Reply::Ok("123".into()),
            Reply::Failed(127, "exec: \"x\": not found".into()),
        ] {
            let mut buf = Vec::new();
            send(&mut buf, &r);
            assert_eq!(receive(&buf[..]).unwrap(), r);
        }
        let mut buf = Vec::new();
        send(&mut buf, &Reply::Failed(1, "two\nlines".into()));
        assert_eq!(
            receive(&buf[..]).unwrap(),
            Reply::Failed(1, "two lines".into())
        );
        assert!(
            receive(&b""[..])
                .unwrap_err()
                .to_string()
                .contains("ended before")
        );
    }
}
