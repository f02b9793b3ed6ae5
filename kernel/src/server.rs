//! The Jupyter side: binds the five sockets of the connection file (signed with its key; a message
//! whose signature does not verify is dropped and logged), answers shell and control requests, and
//! publishes iopub messages (XPUB, `iopub_welcome` to each subscriber).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use jupyter_protocol::messaging::{
    CodeMirrorMode, CommInfoReply, CompleteReply, ErrorOutput, ExecuteInput, ExecuteReply,
    ExecuteResult, ExecutionState, HistoryEntry, HistoryReply, HistoryRequest, InputRequest,
    InspectReply, InterruptReply, IoPubWelcome, IsCompleteReply, IsCompleteReplyStatus,
    KernelInfoReply, LanguageInfo, ReplyError, ReplyStatus, ShutdownReply, Status,
};
use jupyter_protocol::{
    ConnectionInfo, ExecutionCount, JupyterMessage, JupyterMessageContent, Media,
};
use jupyter_zmq_client::connection::{
    SubscriptionEvent, create_kernel_control_connection, create_kernel_heartbeat_connection,
    create_kernel_iopub_xpub_connection, create_kernel_shell_connection,
    create_kernel_stdin_connection,
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::oneshot;

use crate::cargo_progress;
use crate::cell_error::CellError;
use crate::completeness::{Completeness, completeness};
use crate::engine::{self, EngineConfig, EngineRequest, InputBridge};
use crate::history::{History, SESSION};
use crate::router::{self, IopubEvent};
use crate::wire::{ReadError, malformed_reply, read_request};

/// How long a cell may ignore an interrupt before its process is killed.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(10);

/// Reads and checks a connection file.
pub fn read_connection_file(path: &std::path::Path) -> Result<ConnectionInfo> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the connection file {}", path.display()))?;
    let info: ConnectionInfo = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a Jupyter connection file", path.display()))?;
    if !info.key.is_empty() && info.signature_scheme != "hmac-sha256" {
        anyhow::bail!(
            "{}: signature scheme `{}` is not supported (only hmac-sha256)",
            path.display(),
            info.signature_scheme
        );
    }
    Ok(info)
}

fn kernel_info() -> KernelInfoReply {
    KernelInfoReply {
        status: ReplyStatus::Ok,
        protocol_version: "5.3".into(),
        implementation: "arwkv-kernel".into(),
        implementation_version: env!("CARGO_PKG_VERSION").into(),
        language_info: LanguageInfo {
            name: "rust".into(),
            version: rustc_version(),
            mimetype: Some("text/rust".into()),
            file_extension: Some(".rs".into()),
            pygments_lexer: Some("rust".into()),
            codemirror_mode: Some(CodeMirrorMode::Simple("rust".into())),
            nbconvert_exporter: None,
        },
        banner: format!(
            "ARWKV Lab kernel {} — Rust via evcxr 0.22, `arwkv` preloaded",
            env!("CARGO_PKG_VERSION")
        ),
        help_links: vec![],
        debugger: false,
        error: None,
    }
}

/// `language_info` as a notebook's metadata holds it.
pub fn language_info_json() -> serde_json::Value {
    serde_json::to_value(kernel_info().language_info).unwrap_or_default()
}

fn rustc_version() -> String {
    std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_default()
}

/// What the shell remembers between requests.
struct Shell {
    engine: crossbeam_channel::Sender<EngineRequest>,
    iopub: UnboundedSender<IopubEvent>,
    history: History,
    execution_count: usize,
    /// Execute requests sent before this instant are aborted (stop_on_error).
    abort_before: Option<chrono::DateTime<chrono::Utc>>,
    running: Arc<Mutex<Option<u64>>>,
    cell_serial: u64,
    /// Whether the prelude still loads (a cell that waits for it is told why, with cargo's progress).
    prelude: Arc<crate::engine::PreludeStatus>,
    router: crossbeam_channel::Sender<crate::router::RouterCommand>,
}

impl Shell {
    fn publish(&self, content: JupyterMessageContent, parent: &JupyterMessage) {
        let _ = self.iopub.send(IopubEvent {
            content,
            parent: Some(Box::new(parent.clone())),
        });
    }

    fn status(&self, state: ExecutionState, parent: &JupyterMessage) {
        self.publish(
            JupyterMessageContent::Status(Status {
                execution_state: state,
            }),
            parent,
        );
    }

    async fn handle(&mut self, request: &JupyterMessage) -> Option<JupyterMessageContent> {
        Some(match &request.content {
            JupyterMessageContent::KernelInfoRequest(_) => {
                JupyterMessageContent::KernelInfoReply(Box::new(kernel_info()))
            }
            JupyterMessageContent::ExecuteRequest(req) => {
                return Some(self.execute(request, req).await);
            }
            JupyterMessageContent::IsCompleteRequest(req) => {
                let (status, indent) = match completeness(&req.code) {
                    Completeness::Complete => (IsCompleteReplyStatus::Complete, String::new()),
                    Completeness::Incomplete(i) => (IsCompleteReplyStatus::Incomplete, i),
                    Completeness::Invalid => (IsCompleteReplyStatus::Invalid, String::new()),
                };
                JupyterMessageContent::IsCompleteReply(IsCompleteReply { status, indent })
            }
            JupyterMessageContent::CompleteRequest(req) => {
                let pos = char_to_byte(&req.code, req.cursor_pos);
                let (done, wait) = oneshot::channel();
                let _ = self.engine.send(EngineRequest::Complete {
                    code: req.code.clone(),
                    pos,
                    done,
                });
                let (matches, start, end) = match wait.await {
                    Ok(Ok(x)) => x,
                    _ => (vec![], pos, pos),
                };
                JupyterMessageContent::CompleteReply(CompleteReply {
                    matches,
                    cursor_start: byte_to_char(&req.code, start),
                    cursor_end: byte_to_char(&req.code, end),
                    ..Default::default()
                })
            }
            JupyterMessageContent::InspectRequest(req) => {
                let pos = char_to_byte(&req.code, req.cursor_pos);
                let (done, wait) = oneshot::channel();
                let _ = self.engine.send(EngineRequest::Inspect {
                    code: req.code.clone(),
                    pos,
                    done,
                });
                let (plain, html) = match wait.await {
                    Ok(Ok(x)) => x,
                    _ => (String::new(), String::new()),
                };
                let found = !plain.trim().is_empty();
                let mut data = serde_json::Map::new();
                if found {
                    data.insert("text/plain".into(), plain.into());
                    data.insert("text/html".into(), html.into());
                }
                JupyterMessageContent::InspectReply(InspectReply {
                    found,
                    data: serde_json::from_value::<Media>(data.into()).unwrap_or_default(),
                    ..Default::default()
                })
            }
            JupyterMessageContent::HistoryRequest(req) => {
                let (entries, output) = match req {
                    HistoryRequest::Tail { n, output, .. } => {
                        (self.history.tail((*n).max(0) as usize), *output)
                    }
                    HistoryRequest::Range {
                        start,
                        stop,
                        output,
                        ..
                    } => (self.history.range(*start as i64, *stop as i64), *output),
                    HistoryRequest::Search {
                        pattern,
                        unique,
                        n,
                        output,
                        ..
                    } => (
                        self.history.search(pattern, *unique, (*n).max(0) as usize),
                        *output,
                    ),
                };
                let history = entries
                    .into_iter()
                    .map(|e| {
                        if output {
                            HistoryEntry::InputOutput(
                                SESSION,
                                e.line,
                                (e.input.clone(), e.output.clone()),
                            )
                        } else {
                            HistoryEntry::Input(SESSION, e.line, e.input.clone())
                        }
                    })
                    .collect();
                JupyterMessageContent::HistoryReply(HistoryReply {
                    history,
                    status: ReplyStatus::Ok,
                    error: None,
                })
            }
            JupyterMessageContent::CommInfoRequest(_) => {
                JupyterMessageContent::CommInfoReply(CommInfoReply::default())
            }
            JupyterMessageContent::ShutdownRequest(req) => {
                JupyterMessageContent::ShutdownReply(ShutdownReply {
                    restart: req.restart,
                    status: ReplyStatus::Ok,
                    error: None,
                })
            }
            // Comms are not supported: messages to unknown comms are ignored, as the spec allows.
            JupyterMessageContent::CommOpen(_)
            | JupyterMessageContent::CommMsg(_)
            | JupyterMessageContent::CommClose(_) => return None,
            other => {
                eprintln!("arwkv-kernel: ignoring {} on shell", other.message_type());
                return None;
            }
        })
    }

    async fn execute(
        &mut self,
        request: &JupyterMessage,
        req: &jupyter_protocol::ExecuteRequest,
    ) -> JupyterMessageContent {
        let aborted = self.abort_before.is_some_and(|t| request.header.date <= t);
        if aborted {
            return JupyterMessageContent::ExecuteReply(ExecuteReply {
                status: ReplyStatus::Aborted,
                execution_count: ExecutionCount::new(self.execution_count),
                ..Default::default()
            });
        }
        let store = req.store_history && !req.silent;
        if store {
            self.execution_count += 1;
        }
        let count = ExecutionCount::new(self.execution_count.max(1));
        if !req.silent {
            self.publish(
                JupyterMessageContent::ExecuteInput(ExecuteInput {
                    code: req.code.clone(),
                    execution_count: count,
                }),
                request,
            );
        }
        if let Some(notice) = self.prelude.notice() {
            // The engine is still loading the prelude: this cell gets the notice and, until the
            // engine takes it, the build's progress lines.
            let parent = Box::new(request.clone());
            let _ = self
                .router
                .send(crate::router::RouterCommand::Begin(parent));
            let _ = self
                .router
                .send(crate::router::RouterCommand::Stderr(notice));
        }
        self.cell_serial += 1;
        *self.running.lock().expect("running") = Some(self.cell_serial);
        let (done, wait) = oneshot::channel();
        let _ = self.engine.send(EngineRequest::Execute {
            code: req.code.clone(),
            parent: Box::new(request.clone()),
            allow_stdin: req.allow_stdin,
            done,
        });
        let outcome = wait.await.unwrap_or_else(|_| {
            Err(CellError {
                ename: "KernelError".into(),
                evalue: "the evaluation engine stopped".into(),
                traceback: vec!["the evaluation engine stopped".into()],
            })
        });
        *self.running.lock().expect("running") = None;
        match outcome {
            Ok(bundle) => {
                let text = bundle
                    .get("text/plain")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string();
                if !bundle.is_empty() && !req.silent {
                    let data = serde_json::from_value::<Media>(serde_json::Value::Object(
                        bundle.into_iter().collect(),
                    ))
                    .unwrap_or_default();
                    self.publish(
                        JupyterMessageContent::ExecuteResult(ExecuteResult {
                            execution_count: count,
                            data,
                            metadata: Default::default(),
                            // `transient` must be an object when present (msgspec v5).
                            transient: Some(Default::default()),
                        }),
                        request,
                    );
                }
                if store {
                    self.history.push(self.execution_count, &req.code, &text);
                }
                JupyterMessageContent::ExecuteReply(ExecuteReply {
                    status: ReplyStatus::Ok,
                    execution_count: count,
                    user_expressions: Some(Default::default()),
                    ..Default::default()
                })
            }
            Err(e) => {
                if store {
                    self.history.push(self.execution_count, &req.code, "");
                }
                if !req.silent {
                    self.publish(
                        JupyterMessageContent::ErrorOutput(ErrorOutput {
                            ename: e.ename.clone(),
                            evalue: e.evalue.clone(),
                            traceback: e.traceback.clone(),
                        }),
                        request,
                    );
                }
                if req.stop_on_error {
                    self.abort_before = Some(chrono::Utc::now());
                }
                JupyterMessageContent::ExecuteReply(ExecuteReply {
                    status: ReplyStatus::Error,
                    execution_count: count,
                    error: Some(Box::new(ReplyError {
                        ename: e.ename,
                        evalue: e.evalue,
                        traceback: e.traceback,
                    })),
                    ..Default::default()
                })
            }
        }
    }
}

fn char_to_byte(s: &str, chars: usize) -> usize {
    s.char_indices().nth(chars).map_or(s.len(), |(b, _)| b)
}

fn byte_to_char(s: &str, bytes: usize) -> usize {
    s[..bytes.min(s.len())].chars().count()
}

/// Runs the kernel until a shutdown request.
pub async fn serve(connection_file: PathBuf, config: EngineConfig) -> Result<()> {
    let info = read_connection_file(&connection_file)?;
    let session = uuid::Uuid::new_v4().to_string();
    let bind = |what: &str| format!("binding the {what} socket of {}", connection_file.display());
    let mut iopub = create_kernel_iopub_xpub_connection(&info, &session)
        .await
        .with_context(|| bind("iopub"))?;
    let shell = create_kernel_shell_connection(&info, &session)
        .await
        .with_context(|| bind("shell"))?;
    let mut control = create_kernel_control_connection(&info, &session)
        .await
        .with_context(|| bind("control"))?;
    let mut stdin = create_kernel_stdin_connection(&info, &session)
        .await
        .with_context(|| bind("stdin"))?;
    let mut heartbeat = create_kernel_heartbeat_connection(&info)
        .await
        .with_context(|| bind("heartbeat"))?;

    let (iopub_tx, mut iopub_rx): (UnboundedSender<IopubEvent>, UnboundedReceiver<IopubEvent>) =
        unbounded_channel();
    let (router_tx, router_rx) = crossbeam_channel::unbounded();
    {
        let out = iopub_tx.clone();
        std::thread::Builder::new()
            .name("output-router".into())
            .spawn(move || router::run(router_rx, out))?;
    }
    if let Err(e) = cargo_progress::tee_stderr(router_tx.clone()) {
        eprintln!("arwkv-kernel: cargo progress stays in the server log: {e}");
    }
    let (stdin_tx, stdin_rx) = crossbeam_channel::unbounded::<InputBridge>();
    let interrupt_file = config.interrupt_file.clone();
    let handles = engine::start(config, router_tx.clone(), stdin_tx)?;

    tokio::spawn(async move {
        loop {
            if let Err(e) = heartbeat.single_heartbeat().await {
                eprintln!("arwkv-kernel: heartbeat: {e}");
            }
        }
    });
    tokio::spawn(async move {
        loop {
            tokio::select! {
                event = iopub_rx.recv() => {
                    let Some(event) = event else { break };
                    let message = match &event.parent {
                        Some(parent) => JupyterMessage::new(event.content, Some(parent)).with_zmq_identities(vec![]),
                        None => JupyterMessage::new(event.content, None),
                    };
                    if let Err(e) = iopub.send(message).await {
                        eprintln!("arwkv-kernel: iopub send: {e}");
                    }
                }
                sub = iopub.recv_subscription() => {
                    if let Ok(SubscriptionEvent::Subscribe(topic)) = sub {
                        let welcome = JupyterMessage::new(IoPubWelcome { subscription: topic }, None);
                        let _ = iopub.send(welcome).await;
                    }
                }
            }
        }
    });
    // stdin: prompts from the engine thread, answered by the front end.
    tokio::spawn(async move {
        while let Ok(bridge) = tokio::task::block_in_place(|| stdin_rx.recv()) {
            let request = JupyterMessage::new(
                InputRequest {
                    prompt: bridge.prompt,
                    password: bridge.password,
                },
                Some(&bridge.parent),
            );
            let answer = match stdin.send(request).await {
                Ok(()) => match stdin.read().await {
                    Ok(reply) => match reply.content {
                        JupyterMessageContent::InputReply(r) => r.value,
                        _ => String::new(),
                    },
                    Err(e) => {
                        eprintln!("arwkv-kernel: stdin: {e}");
                        String::new()
                    }
                },
                Err(_) => String::new(),
            };
            let _ = bridge.answer.send(answer);
        }
    });

    let running = Arc::new(Mutex::new(None::<u64>));
    let (shutdown_tx, mut shutdown_rx) = unbounded_channel::<()>();
    // control: interrupt (cooperative, then kill), shutdown, kernel_info.
    {
        let running = running.clone();
        let child = handles.child.clone();
        let iopub = iopub_tx.clone();
        let shutdown = shutdown_tx.clone();
        tokio::spawn(async move {
            loop {
                let request = match read_request(&mut control).await {
                    Ok(m) => m,
                    Err(ReadError::Dropped(e)) => {
                        eprintln!("arwkv-kernel: dropped a control message: {e}");
                        continue;
                    }
                    Err(ReadError::Malformed { request, reason }) => {
                        eprintln!("arwkv-kernel: {reason}");
                        let reply = malformed_reply(&request, &reason);
                        let _ = control
                            .send(JupyterMessage::new(reply, Some(&*request)))
                            .await;
                        continue;
                    }
                };
                let reply = match &request.content {
                    JupyterMessageContent::InterruptRequest(_) => {
                        let cell = *running.lock().expect("running");
                        if let Some(cell) = cell {
                            let _ = std::fs::write(&interrupt_file, b"interrupt");
                            let running = running.clone();
                            let child = child.clone();
                            let iopub = iopub.clone();
                            let parent = Box::new(request.clone());
                            tokio::spawn(async move {
                                tokio::time::sleep(INTERRUPT_GRACE).await;
                                if *running.lock().expect("running") == Some(cell) {
                                    if let Some(c) = child.lock().expect("child").as_ref() {
                                        let _ = c.lock().expect("process").kill();
                                    }
                                    let _ = iopub.send(IopubEvent {
                                        content: JupyterMessageContent::StreamContent(
                                            jupyter_protocol::StreamContent {
                                                name: jupyter_protocol::messaging::Stdio::Stderr,
                                                text: format!(
                                                    "arwkv-kernel: the cell ignored the interrupt for {} s; its process was killed (variables are lost).\n",
                                                    INTERRUPT_GRACE.as_secs()
                                                ),
                                            },
                                        ),
                                        parent: Some(parent),
                                    });
                                }
                            });
                        }
                        JupyterMessageContent::InterruptReply(InterruptReply::default())
                    }
                    JupyterMessageContent::ShutdownRequest(req) => {
                        let _ = shutdown.send(());
                        JupyterMessageContent::ShutdownReply(ShutdownReply {
                            restart: req.restart,
                            status: ReplyStatus::Ok,
                            error: None,
                        })
                    }
                    JupyterMessageContent::KernelInfoRequest(_) => {
                        JupyterMessageContent::KernelInfoReply(Box::new(kernel_info()))
                    }
                    other => {
                        eprintln!("arwkv-kernel: ignoring {} on control", other.message_type());
                        continue;
                    }
                };
                let _ = control
                    .send(JupyterMessage::new(reply, Some(&request)))
                    .await;
            }
        });
    }

    let mut shell_state = Shell {
        engine: handles.requests.clone(),
        iopub: iopub_tx.clone(),
        history: History::default(),
        execution_count: 0,
        abort_before: None,
        running,
        cell_serial: 0,
        prelude: handles.prelude.clone(),
        router: router_tx.clone(),
    };
    let (mut shell_send, mut shell_recv) = shell.split();
    let shell_task = async {
        loop {
            let request = match read_request(&mut shell_recv).await {
                Ok(m) => m,
                Err(ReadError::Dropped(e)) => {
                    eprintln!("arwkv-kernel: dropped a shell message: {e}");
                    continue;
                }
                Err(ReadError::Malformed { request, reason }) => {
                    eprintln!("arwkv-kernel: {reason}");
                    shell_state.status(ExecutionState::Busy, &request);
                    let reply = malformed_reply(&request, &reason);
                    let _ = shell_send
                        .send(JupyterMessage::new(reply, Some(&*request)))
                        .await;
                    shell_state.status(ExecutionState::Idle, &request);
                    continue;
                }
            };
            shell_state.status(ExecutionState::Busy, &request);
            let reply = shell_state.handle(&request).await;
            let shutdown = matches!(reply, Some(JupyterMessageContent::ShutdownReply(_)));
            if let Some(reply) = reply {
                let _ = shell_send
                    .send(JupyterMessage::new(reply, Some(&request)))
                    .await;
            }
            shell_state.status(ExecutionState::Idle, &request);
            if shutdown {
                break;
            }
        }
    };
    tokio::select! {
        _ = shell_task => {}
        _ = shutdown_rx.recv() => {}
    }
    // Let iopub flush, stop the evaluation process, leave.
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Some(c) = handles.child.lock().expect("child").as_ref() {
        let _ = c.lock().expect("process").kill();
    }
    let _ = std::fs::remove_file(connection_file.with_extension("interrupt"));
    Ok(())
}
