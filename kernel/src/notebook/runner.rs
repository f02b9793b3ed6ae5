//! The headless runner, `arwkv-kernel run NB.ipynb`: the kernel's own engine and output router
//! without ZeroMQ. Every code cell runs in order; its streams, displays (updated in place by
//! display id, across cells too), `clear_output`, result and error become nbformat-4 outputs, and
//! the notebook is written atomically. A failing cell stops the run: the notebook is still written
//! (outputs up to and including the error) and the error names the cell.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use jupyter_protocol::messaging::Stdio;
use jupyter_protocol::{ExecuteRequest, JupyterMessage, JupyterMessageContent};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;

use arwkv::notebook::PLOTLY_MIME;

use crate::notebook::notebook_file::{CellKind, Notebook, split_source};
use crate::notebook::parameters;
use crate::session::cell_error::CellError;
use crate::session::engine::{EngineConfig, EngineRequest};
use crate::session::router::IopubEvent;

/// What to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The notebook.
    pub input: PathBuf,
    /// Where to write the executed notebook (default: in place).
    pub output: Option<PathBuf>,
    /// `-p NAME=VALUE` overrides.
    pub parameters: Vec<(String, String)>,
    /// Print each cell's text output to the terminal as well.
    pub echo: bool,
    /// Save figures as static images only ([`static_figure`]).
    pub static_figures: bool,
}

/// A cell that failed.
#[derive(Debug)]
pub struct CellFailure {
    /// 1-based index of the cell in the notebook.
    pub cell: usize,
    /// Execution count it got.
    pub execution_count: u64,
    /// The error.
    pub error: CellError,
    /// Where the notebook was written.
    pub written: PathBuf,
}

impl std::fmt::Display for CellFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "cell {} (In [{}]) failed: {}: {}",
            self.cell, self.execution_count, self.error.ename, self.error.evalue
        )?;
        for line in &self.error.traceback {
            writeln!(f, "    {line}")?;
        }
        write!(
            f,
            "outputs up to the failure were written to {}",
            self.written.display()
        )
    }
}

impl std::error::Error for CellFailure {}

/// Outputs of the cells run so far, with the place of every display id.
#[derive(Default)]
struct Outputs {
    cells: HashMap<usize, Vec<Value>>,
    displays: HashMap<String, Vec<(usize, usize)>>,
    clear_pending: bool,
}

impl Outputs {
    fn push(&mut self, cell: usize, output: Value) {
        if std::mem::take(&mut self.clear_pending) {
            self.clear(cell);
        }
        self.cells.entry(cell).or_default().push(output);
    }

    fn clear(&mut self, cell: usize) {
        self.cells.insert(cell, vec![]);
        for places in self.displays.values_mut() {
            places.retain(|(c, _)| *c != cell);
        }
    }

    fn stream(&mut self, cell: usize, name: &str, text: &str) {
        if std::mem::take(&mut self.clear_pending) {
            self.clear(cell);
        }
        let outs = self.cells.entry(cell).or_default();
        // Consecutive chunks of one stream are one output, as Jupyter front ends save them.
        if let Some(last) = outs.last_mut()
            && last["output_type"] == "stream"
            && last["name"] == name
        {
            let joined = format!("{}{text}", joined_text(&last["text"]));
            last["text"] = split_source(&overwrite_carriage_returns(&joined));
            return;
        }
        let text = overwrite_carriage_returns(text);
        outs.push(json!({"output_type": "stream", "name": name, "text": split_source(&text)}));
    }

    fn apply(&mut self, cell: usize, content: JupyterMessageContent) {
        match content {
            JupyterMessageContent::StreamContent(s) => {
                let name = match s.name {
                    Stdio::Stdout => "stdout",
                    Stdio::Stderr => "stderr",
                };
                self.stream(cell, name, &s.text);
            }
            JupyterMessageContent::DisplayData(d) => {
                let id = d.transient.and_then(|t| t.display_id);
                self.push(
                    cell,
                    json!({"output_type": "display_data", "data": d.data, "metadata": d.metadata}),
                );
                if let Some(id) = id {
                    let at = self.cells[&cell].len() - 1;
                    self.displays.entry(id).or_default().push((cell, at));
                }
            }
            JupyterMessageContent::UpdateDisplayData(u) => {
                let Some(id) = u.transient.display_id else {
                    return;
                };
                let data = serde_json::to_value(&u.data).unwrap_or_default();
                for (c, i) in self.displays.get(&id).cloned().unwrap_or_default() {
                    if let Some(out) = self.cells.get_mut(&c).and_then(|o| o.get_mut(i)) {
                        out["data"] = data.clone();
                    }
                }
            }
            JupyterMessageContent::ClearOutput(c) => {
                if c.wait {
                    self.clear_pending = true;
                } else {
                    self.clear(cell);
                }
            }
            _ => {}
        }
    }
}

/// An output as a notebook committed with its results keeps it: a Plotly figure is dropped, and an
/// SVG chart sent as HTML (the live plot's final state) is kept twice — as an `image/svg+xml` image,
/// which viewers and trusted notebooks draw, and as HTML holding the same SVG as an `<img>` data
/// URI, which JupyterLab draws in a notebook it does not trust (it shows no `image/svg+xml` there,
/// and a committed notebook is untrusted on every other machine). Everything else is unchanged.
pub fn static_figure(mut output: Value) -> Value {
    use base64::Engine as _;
    if let Some(data) = output.get_mut("data").and_then(Value::as_object_mut) {
        data.remove(PLOTLY_MIME);
        let svg = data
            .get("text/html")
            .and_then(Value::as_str)
            .filter(|html| html.trim_start().starts_with("<svg"))
            .map(str::to_string);
        if let Some(svg) = svg {
            let alt = data
                .get("text/plain")
                .map(joined_text)
                .and_then(|t| t.lines().next().map(str::to_string))
                .unwrap_or_default();
            let img = format!(
                "<img src=\"data:image/svg+xml;base64,{}\" alt=\"{}\"/>",
                base64::engine::general_purpose::STANDARD.encode(&svg),
                attribute_text(&alt)
            );
            data.insert("text/html".into(), Value::String(img));
            data.insert("image/svg+xml".into(), Value::String(svg));
        }
    }
    output
}

/// `s` escaped for an HTML attribute value in double quotes.
fn attribute_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `text` as a terminal (and a Jupyter front end) shows it: within a line, the text after a carriage
/// return overwrites the line from its start (a progress bar redrawn in place is saved as its last
/// state). A trailing carriage return is kept until more text arrives, and `\r\n` is a newline.
pub fn overwrite_carriage_returns(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut lines = text.split('\n').peekable();
    while let Some(line) = lines.next() {
        let line = line
            .strip_suffix('\r')
            .filter(|_| lines.peek().is_some())
            .unwrap_or(line);
        let (body, trailing_cr) = match line.strip_suffix('\r') {
            Some(body) => (body, true),
            None => (line, false),
        };
        let mut shown: Vec<char> = Vec::new();
        for segment in body.split('\r') {
            for (i, c) in segment.chars().enumerate() {
                match shown.get_mut(i) {
                    Some(slot) => *slot = c,
                    None => shown.push(c),
                }
            }
        }
        out.extend(shown);
        if trailing_cr {
            out.push('\r');
        }
        if lines.peek().is_some() {
            out.push('\n');
        }
    }
    out
}

fn joined_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(Value::as_str).collect(),
        _ => String::new(),
    }
}

fn drain(rx: &mut UnboundedReceiver<IopubEvent>, outputs: &mut Outputs, cell: usize, echo: bool) {
    while let Ok(event) = rx.try_recv() {
        if echo && let JupyterMessageContent::StreamContent(s) = &event.content {
            eprint!("{}", s.text);
        }
        outputs.apply(cell, event.content);
    }
}

/// Runs the notebook; returns where it was written.
pub fn run(options: &RunOptions, config: EngineConfig) -> Result<PathBuf> {
    let mut nb = Notebook::read(&options.input)?;
    if let Some(src) = parameters::inject(&mut nb, &options.parameters)? {
        eprintln!("arwkv-kernel run: injected parameters\n{src}");
    }
    nb.clear_outputs();
    let written = options
        .output
        .clone()
        .unwrap_or_else(|| options.input.clone());

    // Cells of a headless run get no stdin: prompts read an empty line.
    let (stdin_tx, _stdin_rx) = crossbeam_channel::unbounded();
    let session = crate::session::start(config, stdin_tx)?;
    let handles = session.engine;
    let mut iopub_rx = session.published;
    if let Some(notice) = handles.prelude.notice() {
        eprint!("{notice}");
    }

    let code_cells: Vec<usize> = (0..nb.len())
        .filter(|&i| nb.kind(i) == CellKind::Code)
        .collect();
    let mut outputs = Outputs::default();
    let mut count = 0u64;
    let started = Instant::now();
    let mut failure = None;
    for (k, &i) in code_cells.iter().enumerate() {
        let code = nb.source(i);
        if code.trim().is_empty() {
            continue;
        }
        count += 1;
        let cell_started = Instant::now();
        let request = JupyterMessage::new(ExecuteRequest::new(code.clone()), None);
        let (done, wait) = oneshot::channel();
        handles
            .requests
            .send(EngineRequest::Execute {
                code,
                parent: Box::new(request),
                allow_stdin: false,
                done,
            })
            .map_err(|_| anyhow::anyhow!("the evaluation engine stopped"))?;
        let outcome = wait.blocking_recv().unwrap_or_else(|_| {
            Err(CellError {
                ename: "KernelError".into(),
                evalue: "the evaluation engine stopped".into(),
                traceback: vec![],
            })
        });
        outputs.cells.entry(i).or_default();
        drain(&mut iopub_rx, &mut outputs, i, options.echo);
        match outcome {
            Ok(bundle) => {
                if !bundle.is_empty() {
                    outputs.push(
                        i,
                        json!({"output_type": "execute_result", "execution_count": count,
                               "data": bundle, "metadata": {}}),
                    );
                }
            }
            Err(error) => {
                outputs.push(
                    i,
                    json!({"output_type": "error", "ename": error.ename,
                           "evalue": error.evalue, "traceback": error.traceback}),
                );
                failure = Some(CellFailure {
                    cell: i + 1,
                    execution_count: count,
                    error,
                    written: written.clone(),
                });
            }
        }
        eprintln!(
            "arwkv-kernel run: [{}/{}] cell {} {} in {:.1} s",
            k + 1,
            code_cells.len(),
            i + 1,
            if failure.is_some() { "FAILED" } else { "ok" },
            cell_started.elapsed().as_secs_f64()
        );
        // Displays of earlier cells may have been updated too: store every cell's latest outputs.
        for (&c, outs) in &outputs.cells {
            let n = if c == i {
                Some(count)
            } else {
                nb.execution_count(c)
            };
            let outs = match options.static_figures {
                true => outs.iter().cloned().map(static_figure).collect(),
                false => outs.clone(),
            };
            nb.set_outputs(c, outs, n);
        }
        if failure.is_some() {
            break;
        }
    }
    nb.set_kernel_metadata(
        crate::identity::language_info_json(),
        json!({"name": crate::identity::KERNEL_NAME, "display_name": crate::identity::DISPLAY_NAME, "language": "rust"}),
    );
    nb.write(&written)?;
    match failure {
        Some(f) => Err(f.into()),
        None => {
            eprintln!(
                "arwkv-kernel run: {} cells in {:.1} s → {}",
                count,
                started.elapsed().as_secs_f64(),
                written.display()
            );
            Ok(written)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jupyter_protocol::{
        ClearOutput, DisplayData, Media, StreamContent, Transient, UpdateDisplayData,
    };

    fn media(text: &str) -> Media {
        serde_json::from_value(json!({"text/plain": text})).unwrap()
    }

    #[test]
    fn static_figures_keep_the_svg_as_an_image_and_drop_the_plotly_figure() {
        let svg = "<svg xmlns=\"http://www.w3.org/2000/svg\"></svg>";
        let plot = json!({"output_type": "display_data", "metadata": {},
            "data": {PLOTLY_MIME: {"data": []}, "text/html": svg, "text/plain": "loss 0.5"}});
        let got = static_figure(plot);
        let img = "<img src=\"data:image/svg+xml;base64,\
                   PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciPjwvc3ZnPg==\" alt=\"loss 0.5\"/>";
        assert_eq!(
            got["data"],
            json!({"image/svg+xml": svg, "text/html": img, "text/plain": "loss 0.5"})
        );
        // The alt text is the first line of the text, escaped.
        let quoted = json!({"output_type": "display_data", "metadata": {},
            "data": {"text/html": svg, "text/plain": "a \"b\" <c>\nsecond line"}});
        let html = static_figure(quoted)["data"]["text/html"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            html.ends_with("alt=\"a &quot;b&quot; &lt;c&gt;\"/>"),
            "{html}"
        );
        let table = json!({"output_type": "display_data", "metadata": {},
            "data": {"text/html": "<table></table>", "text/plain": "t"}});
        assert_eq!(static_figure(table.clone()), table);
        let stream = json!({"output_type": "stream", "name": "stdout", "text": "x"});
        assert_eq!(static_figure(stream.clone()), stream);
    }

    #[test]
    fn carriage_returns_overwrite_the_line_as_a_front_end_shows_it() {
        assert_eq!(overwrite_carriage_returns("a\nb\n"), "a\nb\n");
        assert_eq!(
            overwrite_carriage_returns("step 1/3\rstep 2/3\rstep 3/3\ndone\n"),
            "step 3/3\ndone\n"
        );
        // A shorter redraw leaves the old tail, as on a terminal.
        assert_eq!(
            overwrite_carriage_returns("loss 0.1234\rloss 0.9\n"),
            "loss 0.9234\n"
        );
        assert_eq!(overwrite_carriage_returns("x\r\ny"), "x\ny");
        // The last redraw stays until the next chunk overwrites it.
        assert_eq!(overwrite_carriage_returns("1/2\r"), "1/2\r");
        let mut o = Outputs::default();
        for chunk in ["Kl 1/2\r", "Kl 2/2\r", "\nfinal\n"] {
            o.apply(
                0,
                JupyterMessageContent::StreamContent(StreamContent {
                    name: Stdio::Stderr,
                    text: chunk.into(),
                }),
            );
        }
        assert_eq!(joined_text(&o.cells[&0][0]["text"]), "Kl 2/2\nfinal\n");
    }

    #[test]
    fn streams_join_displays_update_in_place_and_clear_waits() {
        let mut o = Outputs::default();
        let stream = |t: &str| {
            JupyterMessageContent::StreamContent(StreamContent {
                name: Stdio::Stdout,
                text: t.into(),
            })
        };
        o.apply(0, stream("a\n"));
        o.apply(0, stream("b\n"));
        assert_eq!(o.cells[&0].len(), 1);
        assert_eq!(joined_text(&o.cells[&0][0]["text"]), "a\nb\n");
        o.apply(
            0,
            JupyterMessageContent::DisplayData(DisplayData {
                data: media("v1"),
                metadata: Default::default(),
                transient: Some(Transient {
                    display_id: Some("d".into()),
                }),
            }),
        );
        // An update from a later cell reaches the earlier cell's output.
        o.apply(
            3,
            JupyterMessageContent::UpdateDisplayData(UpdateDisplayData {
                data: media("v2"),
                metadata: Default::default(),
                transient: Transient {
                    display_id: Some("d".into()),
                },
            }),
        );
        assert_eq!(o.cells[&0][1]["data"]["text/plain"], "v2");
        o.apply(
            0,
            JupyterMessageContent::ClearOutput(ClearOutput { wait: true }),
        );
        assert_eq!(o.cells[&0].len(), 2, "wait=true clears on the next output");
        o.apply(0, stream("c\n"));
        assert_eq!(o.cells[&0].len(), 1);
        assert_eq!(joined_text(&o.cells[&0][0]["text"]), "c\n");
    }
}
