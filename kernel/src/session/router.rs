//! The output router: every line the evaluation process prints becomes an iopub message of the
//! running cell — `stream` for text, `display_data` / `update_display_data` for the library's
//! display marker lines (updates throttled per display to `MIN_UPDATE_INTERVAL`, the latest one
//! always delivered when the cell ends). A `Barrier` at the end of a cell drains both pipes so all
//! output precedes the reply and `idle`, and reports a panic seen on stderr.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arwkv::notebook::display::{DisplayMessage, DisplayOp};
use crossbeam_channel::{Receiver, Sender, select};
use jupyter_protocol::{
    ClearOutput, DisplayData, JupyterMessage, JupyterMessageContent, Media, StreamContent,
    Transient, UpdateDisplayData, messaging::Stdio,
};
use tokio::sync::mpsc::UnboundedSender;

use crate::session::cell_error::CellError;

/// Shortest time between two updates of one display.
pub const MIN_UPDATE_INTERVAL: Duration = Duration::from_millis(200);

/// How long the pipes must stay quiet before a cell counts as drained.
const QUIET: Duration = Duration::from_millis(30);

/// One message for iopub, with the request it answers.
pub struct IopubEvent {
    /// The content.
    pub content: JupyterMessageContent,
    /// Its parent request.
    pub parent: Option<Box<JupyterMessage>>,
}

/// What the engine tells the router.
pub enum RouterCommand {
    /// evcxr's output channels (after each start of the context).
    Attach(Receiver<String>, Receiver<String>),
    /// A cell starts; its outputs are children of this request.
    Begin(Box<JupyterMessage>),
    /// Text for the cell's stderr stream.
    Stderr(String),
    /// The cell ended: drain, flush pending updates, report.
    Barrier(Sender<CellReport>),
    /// The engine could not start.
    Fatal(String),
}

/// What the router saw during a cell.
#[derive(Clone, Debug, Default)]
pub struct CellReport {
    /// A panic printed by the default hook on stderr.
    pub panic: Option<CellError>,
}

struct Router {
    out: UnboundedSender<IopubEvent>,
    parent: Option<Box<JupyterMessage>>,
    last_update: HashMap<String, Instant>,
    pending: HashMap<String, DisplayMessage>,
    panic_lines: Option<Vec<String>>,
    /// The panic message has ended (a backtrace or the hint follows).
    panic_complete: bool,
}

fn media(data: arwkv::notebook::Bundle) -> Media {
    serde_json::from_value(serde_json::Value::Object(data.into_iter().collect()))
        .unwrap_or_default()
}

impl Router {
    fn emit(&self, content: JupyterMessageContent) {
        let _ = self.out.send(IopubEvent {
            content,
            parent: self.parent.clone(),
        });
    }

    fn stream(&self, name: Stdio, text: String) {
        if !text.is_empty() {
            self.emit(JupyterMessageContent::StreamContent(StreamContent {
                name,
                text,
            }));
        }
    }

    fn send_display(&mut self, m: DisplayMessage) {
        if m.op == DisplayOp::Clear {
            self.emit(JupyterMessageContent::ClearOutput(ClearOutput {
                wait: true,
            }));
            return;
        }
        let transient = Transient {
            display_id: Some(m.id.clone()),
        };
        self.last_update.insert(m.id.clone(), Instant::now());
        let content = match m.op {
            DisplayOp::Display => JupyterMessageContent::DisplayData(DisplayData {
                data: media(m.data),
                metadata: Default::default(),
                transient: Some(transient),
            }),
            DisplayOp::Clear => unreachable!("handled above"),
            DisplayOp::Update => JupyterMessageContent::UpdateDisplayData(UpdateDisplayData {
                data: media(m.data),
                metadata: Default::default(),
                transient,
            }),
        };
        self.emit(content);
    }

    /// Stdout lines, batched: text goes out as one stream message, display lines as displays.
    fn stdout_lines(&mut self, lines: Vec<String>) {
        let mut text = String::new();
        for line in lines {
            match DisplayMessage::from_line(&line) {
                None => {
                    text.push_str(&line);
                    text.push('\n');
                }
                Some(parsed) => {
                    self.stream(Stdio::Stdout, std::mem::take(&mut text));
                    match parsed {
                        Ok(m) => self.display(m),
                        Err(e) => self.stream(
                            Stdio::Stderr,
                            format!("arwkv-kernel: a malformed display message was dropped: {e}\n"),
                        ),
                    }
                }
            }
        }
        self.stream(Stdio::Stdout, text);
    }

    fn display(&mut self, m: DisplayMessage) {
        let throttled = m.op == DisplayOp::Update
            && self
                .last_update
                .get(&m.id)
                .is_some_and(|t| t.elapsed() < MIN_UPDATE_INTERVAL);
        if throttled {
            self.pending.insert(m.id.clone(), m);
        } else {
            self.pending.remove(&m.id);
            self.send_display(m);
        }
    }

    fn flush_due(&mut self, all: bool) {
        let due: Vec<String> = self
            .pending
            .keys()
            .filter(|id| {
                all || self
                    .last_update
                    .get(*id)
                    .is_none_or(|t| t.elapsed() >= MIN_UPDATE_INTERVAL)
            })
            .cloned()
            .collect();
        for id in due {
            if let Some(m) = self.pending.remove(&id) {
                self.send_display(m);
            }
        }
    }

    fn stderr_lines(&mut self, lines: Vec<String>) {
        let mut text = String::new();
        for line in lines {
            if is_panic_header(&line) {
                self.panic_lines = Some(vec![]);
                self.panic_complete = false;
            }
            if line.starts_with("stack backtrace:")
                || line.starts_with("note: run with `RUST_BACKTRACE")
            {
                self.panic_complete = true;
            }
            if let (Some(p), false) = (&mut self.panic_lines, self.panic_complete) {
                p.push(line.clone());
            }
            text.push_str(&line);
            text.push('\n');
        }
        self.stream(Stdio::Stderr, text);
    }
}

/// The default panic hook's first line: `thread '<name>' panicked at …`, newer toolchains add ` (<tid>)`.
fn is_panic_header(line: &str) -> bool {
    line.starts_with("thread '") && line.contains(" panicked at ")
}

fn drain(rx: &Receiver<String>, first: String) -> Vec<String> {
    let mut lines = vec![first];
    while let Ok(l) = rx.try_recv() {
        lines.push(l);
    }
    lines
}

/// Runs the router until the engine is gone.
pub fn run(commands: Receiver<RouterCommand>, out: UnboundedSender<IopubEvent>) {
    let mut r = Router {
        out,
        parent: None,
        last_update: HashMap::new(),
        pending: HashMap::new(),
        panic_lines: None,
        panic_complete: false,
    };
    let never = crossbeam_channel::never::<String>();
    let (mut stdout, mut stderr) = (never.clone(), never.clone());
    loop {
        select! {
            recv(commands) -> cmd => match cmd {
                Err(_) => return,
                Ok(RouterCommand::Attach(o, e)) => (stdout, stderr) = (o, e),
                Ok(RouterCommand::Begin(parent)) => {
                    r.flush_due(true);
                    r.parent = Some(parent);
                    r.panic_lines = None;
                }
                Ok(RouterCommand::Stderr(text)) => r.stream(Stdio::Stderr, text),
                Ok(RouterCommand::Fatal(text)) => r.stream(Stdio::Stderr, format!("{text}\n")),
                Ok(RouterCommand::Barrier(ack)) => {
                    // Drain until both pipes have been quiet for a moment.
                    let mut quiet_since = Instant::now();
                    while quiet_since.elapsed() < QUIET {
                        select! {
                            recv(stdout) -> l => if let Ok(l) = l {
                                let lines = drain(&stdout, l);
                                r.stdout_lines(lines);
                                quiet_since = Instant::now();
                            },
                            recv(stderr) -> l => if let Ok(l) = l {
                                let lines = drain(&stderr, l);
                                r.stderr_lines(lines);
                                quiet_since = Instant::now();
                            },
                            default(QUIET) => {}
                        }
                    }
                    r.flush_due(true);
                    let panic = r.panic_lines.take().map(|lines| CellError {
                        ename: "panic".into(),
                        evalue: lines.get(1).cloned().unwrap_or_else(|| lines[0].clone()),
                        traceback: lines,
                    });
                    let _ = ack.send(CellReport { panic });
                }
            },
            recv(stdout) -> l => match l {
                Ok(l) => { let lines = drain(&stdout, l); r.stdout_lines(lines) }
                Err(_) => stdout = never.clone(),
            },
            recv(stderr) -> l => match l {
                Ok(l) => { let lines = drain(&stderr, l); r.stderr_lines(lines) }
                Err(_) => stderr = never.clone(),
            },
            default(MIN_UPDATE_INTERVAL) => r.flush_due(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_panic_header;

    #[test]
    fn panic_headers_of_old_and_new_toolchains_are_recognised() {
        assert!(is_panic_header(
            "thread '<unnamed>' panicked at src/lib.rs:3:1:"
        ));
        assert!(is_panic_header(
            "thread '<unnamed>' (16119) panicked at src/lib.rs:98:1:"
        ));
        assert!(!is_panic_header("the thread 'x' panicked at nothing"));
        assert!(!is_panic_header("thread 'main' finished"));
    }
}
