//! Reading requests off a socket: the signature is checked by `jupyter-zmq-client`, then the content
//! is completed with the defaults the messaging spec allows clients to omit (jupyter_client leaves out
//! `n` of a history search, for instance) before it is parsed. A message that still does not parse
//! is not silently dropped: it comes back as [`ReadError::Malformed`] with its header, so the kernel
//! can answer with an error reply naming the problem.

use jupyter_protocol::messaging::{Header, UnknownMessage};
use jupyter_protocol::{JupyterMessage, JupyterMessageContent};
use jupyter_zmq_client::connection::{Connection, RawMessage};
use serde_json::{Value, json};
use zeromq::SocketRecv;

/// Why no request came out of a read.
#[derive(Debug)]
pub enum ReadError {
    /// Unsigned, badly signed or not a Jupyter message at all: logged and dropped.
    Dropped(String),
    /// Signed and framed, but its content does not fit its type: answered with an error reply.
    Malformed {
        /// The request, with its content kept raw.
        request: Box<JupyterMessage>,
        /// What is wrong.
        reason: String,
    },
}

/// Receives one message, verifies it and parses it leniently.
pub async fn read_request<S: SocketRecv>(
    connection: &mut Connection<S>,
) -> Result<JupyterMessage, ReadError> {
    let multipart = connection
        .socket
        .recv()
        .await
        .map_err(|e| ReadError::Dropped(format!("receive: {e}")))?;
    let raw = RawMessage::from_multipart(multipart, &connection.mac)
        .map_err(|e| ReadError::Dropped(format!("signature or framing: {e}")))?;
    decode(raw)
}

pub(crate) fn decode(raw: RawMessage) -> Result<JupyterMessage, ReadError> {
    let part = |i: usize, what: &str| -> Result<Value, ReadError> {
        serde_json::from_slice(&raw.jparts[i])
            .map_err(|e| ReadError::Dropped(format!("the {what} is not JSON: {e}")))
    };
    let header: Header = serde_json::from_value(part(0, "header")?)
        .map_err(|e| ReadError::Dropped(format!("bad header: {e}")))?;
    let parent_header = serde_json::from_value(part(1, "parent header")?).ok();
    let metadata = part(2, "metadata")?;
    let mut content = part(3, "content")?;
    with_spec_defaults(&header.msg_type, &mut content);
    let mut message = JupyterMessage {
        zmq_identities: raw.zmq_identities,
        header,
        parent_header,
        metadata,
        content: JupyterMessageContent::UnknownMessage(UnknownMessage {
            msg_type: String::new(),
            content: Value::Null,
        }),
        buffers: raw.jparts[4..].to_vec(),
        channel: None,
    };
    match JupyterMessageContent::from_type_and_content(&message.header.msg_type, content.clone()) {
        Ok(parsed) => {
            message.content = parsed;
            Ok(message)
        }
        Err(e) => {
            let reason = format!("malformed {}: {e}", message.header.msg_type);
            message.content = JupyterMessageContent::UnknownMessage(UnknownMessage {
                msg_type: message.header.msg_type.clone(),
                content,
            });
            Err(ReadError::Malformed {
                request: Box::new(message),
                reason,
            })
        }
    }
}

/// Fills the fields the messaging spec lets a client omit with the spec's defaults.
pub fn with_spec_defaults(msg_type: &str, content: &mut Value) {
    let Some(map) = content.as_object_mut() else {
        return;
    };
    match msg_type {
        "execute_request" => {
            default(map, "silent", json!(false));
            default(map, "user_expressions", json!({}));
            default(map, "allow_stdin", json!(true));
            default(map, "stop_on_error", json!(true));
            let silent = map.get("silent").and_then(Value::as_bool).unwrap_or(false);
            map.entry("store_history").or_insert(json!(!silent));
        }
        "history_request" => {
            default(map, "output", json!(false));
            default(map, "raw", json!(true));
            default(map, "hist_access_type", json!("range"));
            let kind = map
                .get("hist_access_type")
                .and_then(Value::as_str)
                .map(str::to_string);
            match kind.as_deref() {
                Some("tail") => default(map, "n", json!(10)),
                Some("search") => {
                    default(map, "pattern", json!("*"));
                    default(map, "unique", json!(false));
                    default(map, "n", json!(0));
                }
                _ => {
                    default(map, "session", json!(0));
                    default(map, "start", json!(0));
                    default(map, "stop", json!(0));
                }
            }
            // `null` means "not given" for these integers.
            for key in ["n", "start", "stop"] {
                if map.get(key) == Some(&Value::Null) {
                    map.insert(key.to_string(), json!(0));
                }
            }
        }
        "shutdown_request" => default(map, "restart", json!(false)),
        "inspect_request" => default(map, "detail_level", json!(0)),
        _ => {}
    }
}

fn default(map: &mut serde_json::Map<String, Value>, key: &str, value: Value) {
    map.entry(key.to_string()).or_insert(value);
}

/// The error reply (`<type>_reply`, status `error`) to a request that could not be parsed.
pub fn malformed_reply(request: &JupyterMessage, reason: &str) -> JupyterMessageContent {
    let reply_type = request
        .header
        .msg_type
        .strip_suffix("_request")
        .map_or_else(
            || format!("{}_reply", request.header.msg_type),
            |s| format!("{s}_reply"),
        );
    JupyterMessageContent::UnknownMessage(UnknownMessage {
        msg_type: reply_type,
        content: json!({
            "status": "error",
            "ename": "MalformedRequest",
            "evalue": reason,
            "traceback": [reason],
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(msg_type: &str, mut content: Value) -> JupyterMessageContent {
        with_spec_defaults(msg_type, &mut content);
        JupyterMessageContent::from_type_and_content(msg_type, content).expect("parses")
    }

    #[test]
    fn a_history_search_without_n_or_unique_parses_with_the_spec_defaults() {
        match parsed(
            "history_request",
            json!({"hist_access_type": "search", "pattern": "6 *", "raw": true, "output": false}),
        ) {
            JupyterMessageContent::HistoryRequest(
                jupyter_protocol::messaging::HistoryRequest::Search { n, unique, .. },
            ) => {
                assert_eq!(n, 0);
                assert!(!unique);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_minimal_execute_request_stores_history_unless_silent() {
        match parsed("execute_request", json!({"code": "1"})) {
            JupyterMessageContent::ExecuteRequest(r) => assert!(r.store_history && !r.silent),
            other => panic!("unexpected {other:?}"),
        }
        match parsed("execute_request", json!({"code": "1", "silent": true})) {
            JupyterMessageContent::ExecuteRequest(r) => assert!(!r.store_history),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_request_missing_required_content_is_answered_with_a_named_error() {
        let raw = RawMessage {
            zmq_identities: vec![],
            jparts: vec![
                serde_json::to_vec(&json!({"msg_id": "m1", "username": "u", "session": "s",
                    "date": "2026-01-01T00:00:00Z", "msg_type": "complete_request", "version": "5.3"}))
                .unwrap()
                .into(),
                b"{}".to_vec().into(),
                b"{}".to_vec().into(),
                b"{\"cursor_pos\": 3}".to_vec().into(),
            ],
        };
        match decode(raw) {
            Err(ReadError::Malformed { request, reason }) => {
                assert!(
                    reason.contains("complete_request") && reason.contains("code"),
                    "{reason}"
                );
                match malformed_reply(&request, &reason) {
                    JupyterMessageContent::UnknownMessage(m) => {
                        assert_eq!(m.msg_type, "complete_reply");
                        assert_eq!(m.content["status"], "error");
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            other => panic!("expected a malformed request, got {other:?}"),
        }
    }
}
