//! Version negotiation at the start of a connection.

use std::io::{Read, Write};

use crate::PROTOCOL_VERSION;
use crate::error::ProtocolError;
use crate::frame::Frame;
use crate::message::{AgentMessage, HostMessage};
use crate::reader::FrameReader;
use crate::writer::FrameWriter;

/// Accepts the peer's version if it is ours. There is no range: both sides ship together, and
/// an incompatible change bumps the version.
pub fn check_version(theirs: u32) -> Result<(), ProtocolError> {
    if theirs == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(ProtocolError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        })
    }
}

/// The host's side of the handshake: sends `Hello`, waits for the agent's answer and checks
/// its version. Returns the agent's build version. On error the caller closes the connection.
pub fn host_handshake<R: Read, W: Write>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
) -> Result<String, ProtocolError> {
    writer.write_control(&HostMessage::Hello {
        version: PROTOCOL_VERSION,
    })?;
    writer.flush()?;
    match reader.read_frame::<AgentMessage>()? {
        None => Err(ProtocolError::Closed),
        Some(Frame::Control(AgentMessage::Hello {
            version,
            agent_version,
        })) => {
            check_version(version)?;
            Ok(agent_version)
        }
        Some(Frame::Control(AgentMessage::Error { message })) => {
            Err(ProtocolError::Rejected(message))
        }
        Some(other) => Err(ProtocolError::Unexpected(format!(
            "{other:?} instead of the agent's hello"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::frame::encode_control;

    fn run(answer: &[AgentMessage]) -> (Result<String, ProtocolError>, Vec<u8>) {
        let mut bytes = Vec::new();
        for msg in answer {
            encode_control(msg, &mut bytes).unwrap();
        }
        let mut reader = FrameReader::new(Cursor::new(bytes));
        let mut writer = FrameWriter::new(Vec::new());
        let result = host_handshake(&mut reader, &mut writer);
        (result, writer.into_inner())
    }

    #[test]
    fn accepts_our_version() {
        let (result, sent) = run(&[AgentMessage::Hello {
            version: PROTOCOL_VERSION,
            agent_version: "0.1.0".into(),
        }]);
        assert_eq!(result.unwrap(), "0.1.0");
        let mut r = FrameReader::new(Cursor::new(sent));
        assert_eq!(
            r.read_frame::<HostMessage>().unwrap(),
            Some(Frame::Control(HostMessage::Hello {
                version: PROTOCOL_VERSION
            }))
        );
    }

    #[test]
    fn refuses_other_versions_and_errors() {
        let (result, _) = run(&[AgentMessage::Hello {
            version: 99,
            agent_version: "9".into(),
        }]);
        assert!(matches!(
            result,
            Err(ProtocolError::VersionMismatch { theirs: 99, .. })
        ));
        let (result, _) = run(&[AgentMessage::Error {
            message: "no".into(),
        }]);
        assert!(matches!(result, Err(ProtocolError::Rejected(m)) if m == "no"));
        let (result, _) = run(&[]);
        assert!(matches!(result, Err(ProtocolError::Closed)));
        let (result, _) = run(&[AgentMessage::Started { pid: 1 }]);
        assert!(matches!(result, Err(ProtocolError::Unexpected(_))));
    }
}
