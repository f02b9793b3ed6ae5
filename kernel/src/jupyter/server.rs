//! The Jupyter side: binds the five sockets of the connection file (signed with its key; a message
//! whose signature does not verify is dropped and logged), answers shell and control requests, and
//! publishes iopub messages (XPUB, `iopub_welcome` to each subscriber).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use jupyter_protocol::messaging::{
    CommInfoReply, CompleteReply, ErrorOutput, ExecuteInput, ExecuteReply, ExecuteResult,
    ExecutionState, HistoryEntry, HistoryReply, HistoryRequest, InputRequest, InspectReply,
    InterruptReply, IoPubWelcome, IsCompleteReply, IsCompleteReplyStatus, ReplyError, ReplyStatus,
    ShutdownReply, Status,
};
use jupyter_protocol::{
    ConnectionInfo, ExecutionCount, JupyterMessage, JupyterMessageContent, Media,
};
use jupyter_zmq_client::connection::{
    KernelControlConnection, KernelHeartbeatConnection, KernelIoPubXPubConnection,
    KernelShellConnection, KernelStdinConnection, SubscriptionEvent,
    create_kernel_control_connection, create_kernel_heartbeat_connection,
    create_kernel_iopub_xpub_connection, create_kernel_shell_connection,
    create_kernel_stdin_connection,
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::oneshot;

use crate::identity::kernel_info;
use crate::jupyter::completeness::{Completeness, completeness};
use crate::jupyter::history::{History, SESSION};
use crate::jupyter::wire::{ReadError, malformed_reply, read_request};
use crate::session::cargo_progress;
use crate::session::cell_error::CellError;
use crate::session::engine::{EngineConfig, EngineRequest, InputBridge};
use crate::session::router::IopubEvent;

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
    prelude: Arc<crate::session::engine::PreludeStatus>,
    router: crossbeam_channel::Sender<crate::session::router::RouterCommand>,
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
                .send(crate::session::router::RouterCommand::Begin(parent));
            let _ = self
                .router
                .send(crate::session::router::RouterCommand::Stderr(notice));
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
    let iopub = create_kernel_iopub_xpub_connection(&info, &session)
        .await
        .with_context(|| bind("iopub"))?;
    let shell = create_kernel_shell_connection(&info, &session)
        .await
        .with_context(|| bind("shell"))?;
    let control = create_kernel_control_connection(&info, &session)
        .await
        .with_context(|| bind("control"))?;
    let stdin = create_kernel_stdin_connection(&info, &session)
        .await
        .with_context(|| bind("stdin"))?;
    let heartbeat = create_kernel_heartbeat_connection(&info)
        .await
        .with_context(|| bind("heartbeat"))?;

    let (stdin_tx, stdin_rx) = crossbeam_channel::unbounded::<InputBridge>();
    let interrupt_file = config.interrupt_file.clone();
    let session = crate::session::start(config, stdin_tx)?;
    if let Err(e) = cargo_progress::tee_stderr(session.router.clone()) {
        eprintln!("arwkv-kernel: cargo progress stays in the server log: {e}");
    }
    let (handles, router_tx, iopub_tx, iopub_rx) = (
        session.engine,
        session.router,
        session.publish,
        session.published,
    );
    tokio::spawn(heartbeat_loop(heartbeat));
    tokio::spawn(iopub_loop(iopub, iopub_rx));
    tokio::spawn(stdin_loop(stdin, stdin_rx));
    let running = Arc::new(Mutex::new(None::<u64>));
    let (shutdown_tx, mut shutdown_rx) = unbounded_channel::<()>();
    let interrupts = Interrupts {
        running: running.clone(),
        child: handles.child.clone(),
        iopub: iopub_tx.clone(),
        interrupt_file,
    };
    tokio::spawn(control_loop(control, interrupts, shutdown_tx));
    let shell_state = Shell {
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
    tokio::select! {
        _ = shell_loop(shell, shell_state) => {}
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

/// Heartbeat: echoes every ping until the kernel exits.
async fn heartbeat_loop(mut heartbeat: KernelHeartbeatConnection) {
    loop {
        if let Err(e) = heartbeat.single_heartbeat().await {
            eprintln!("arwkv-kernel: heartbeat: {e}");
        }
    }
}

/// iopub: publishes the router's events and welcomes each new subscriber (`iopub_welcome`).
async fn iopub_loop(
    mut iopub: KernelIoPubXPubConnection,
    mut events: UnboundedReceiver<IopubEvent>,
) {
    loop {
        tokio::select! {
            event = events.recv() => {
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
}

/// stdin: the engine's prompts go to the front end; its `input_reply` (or "" when none comes) goes
/// back to the waiting cell.
async fn stdin_loop(
    mut stdin: KernelStdinConnection,
    prompts: crossbeam_channel::Receiver<InputBridge>,
) {
    while let Ok(bridge) = tokio::task::block_in_place(|| prompts.recv()) {
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
}

/// What an interrupt needs: the running cell, the evaluation process, iopub for the notice.
struct Interrupts {
    /// Serial number of the cell that runs now.
    running: Arc<Mutex<Option<u64>>>,
    /// The evaluation process (killed when a cell ignores the interrupt).
    child: Arc<Mutex<Option<Arc<Mutex<std::process::Child>>>>>,
    iopub: UnboundedSender<IopubEvent>,
    /// The file the running cell polls (cooperative interrupt).
    interrupt_file: PathBuf,
}

impl Interrupts {
    /// Asks the running cell to stop; kills its process if it still runs [`INTERRUPT_GRACE`] later.
    fn interrupt(&self, request: &JupyterMessage) {
        let Some(cell) = *self.running.lock().expect("running") else {
            return;
        };
        let _ = std::fs::write(&self.interrupt_file, b"interrupt");
        let running = self.running.clone();
        let child = self.child.clone();
        let iopub = self.iopub.clone();
        let parent = Box::new(request.clone());
        tokio::spawn(async move {
            tokio::time::sleep(INTERRUPT_GRACE).await;
            if *running.lock().expect("running") != Some(cell) {
                return;
            }
            if let Some(c) = child.lock().expect("child").as_ref() {
                let _ = c.lock().expect("process").kill();
            }
            let _ = iopub.send(IopubEvent {
                content: JupyterMessageContent::StreamContent(jupyter_protocol::StreamContent {
                    name: jupyter_protocol::messaging::Stdio::Stderr,
                    text: format!(
                        "arwkv-kernel: the cell ignored the interrupt for {} s; its process was killed (variables are lost).\n",
                        INTERRUPT_GRACE.as_secs()
                    ),
                }),
                parent: Some(parent),
            });
        });
    }
}

/// control: interrupt (cooperative, then kill), shutdown, kernel_info.
async fn control_loop(
    mut control: KernelControlConnection,
    interrupts: Interrupts,
    shutdown: UnboundedSender<()>,
) {
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
                interrupts.interrupt(&request);
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
}

/// shell: one request at a time, each framed by busy/idle status; returns after a shutdown.
async fn shell_loop(shell: KernelShellConnection, mut state: Shell) {
    let (mut send, mut recv) = shell.split();
    loop {
        let request = match read_request(&mut recv).await {
            Ok(m) => m,
            Err(ReadError::Dropped(e)) => {
                eprintln!("arwkv-kernel: dropped a shell message: {e}");
                continue;
            }
            Err(ReadError::Malformed { request, reason }) => {
                eprintln!("arwkv-kernel: {reason}");
                state.status(ExecutionState::Busy, &request);
                let reply = malformed_reply(&request, &reason);
                let _ = send.send(JupyterMessage::new(reply, Some(&*request))).await;
                state.status(ExecutionState::Idle, &request);
                continue;
            }
        };
        state.status(ExecutionState::Busy, &request);
        let reply = state.handle(&request).await;
        let shutdown = matches!(reply, Some(JupyterMessageContent::ShutdownReply(_)));
        if let Some(reply) = reply {
            let _ = send.send(JupyterMessage::new(reply, Some(&request))).await;
        }
        state.status(ExecutionState::Idle, &request);
        if shutdown {
            break;
        }
    }
}
