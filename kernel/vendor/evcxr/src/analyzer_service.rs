// ARWKV patch (see PATCH.md): rust-analyzer in a process that several evaluation contexts share.
//
// Licensed under the Apache License, Version 2.0 <LICENSE or
// https://www.apache.org/licenses/LICENSE-2.0> or the MIT license <LICENSE
// or https://opensource.org/licenses/MIT>, at your option.

//! A rust-analyzer that outlives the evaluation contexts using it.
//!
//! Loading and name-resolving a large crate graph takes tens of seconds, and every new context
//! (a kernel start or restart) paid it again. [`serve_analyzer`] keeps one analyzer loaded for a
//! manifest and answers the queries of any context whose crate has that same manifest, over a Unix
//! socket; each query carries the whole analysis source, so contexts never see one another's code.
//! A context whose manifest differs (another `:dep`), or that cannot reach the service, uses its
//! own in-process analyzer as before.

use crate::rust_analyzer::{Completion, Completions, RustAnalyzer, TypeName, VariableInfo};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One query, with everything the analyzer needs to answer it.
#[derive(Serialize, Deserialize)]
struct Request {
    /// The asking context's `Cargo.toml`, verbatim: answered only when it equals the service's.
    manifest: String,
    /// The whole analysis source (the cell wrapped with the context's earlier items).
    source: String,
    query: Query,
}

#[derive(Serialize, Deserialize)]
enum Query {
    Variables { function: String },
    Completions { position: usize },
    Hover { offset: u32, markdown: bool },
}

#[derive(Serialize, Deserialize)]
enum Reply {
    Variables(Vec<(String, WireType, bool)>),
    Completions {
        items: Vec<(String, String, String)>,
        start_offset: usize,
        end_offset: usize,
    },
    Hover(Option<String>),
    /// The analyzer failed on this query (as the in-process one would have); the service stays
    /// in use.
    Failed(String),
    /// Not answered (another manifest, or the analyzer failed); the context answers itself.
    Refused(String),
}

#[derive(Serialize, Deserialize)]
enum WireType {
    Named(String),
    Closure,
    Unknown,
}

/// Serves analyzer queries for the crate whose `Cargo.toml` (and `Cargo.lock`) are in `dir`, on
/// `listener`, until no context has been connected for `idle_exit`. The crate graph is loaded at
/// the first query and kept; the analyzer writes its own `src/lib.rs` under `dir`.
pub fn serve_analyzer(dir: &Path, listener: UnixListener, idle_exit: Duration) -> Result<()> {
    let manifest = canonical_manifest(
        &std::fs::read_to_string(dir.join("Cargo.toml"))
            .with_context(|| format!("reading {}", dir.join("Cargo.toml").display()))?,
    );
    let mut analyzer = RustAnalyzer::new(dir)?;
    let connected = Arc::new(AtomicUsize::new(0));
    let (queries, incoming) = crossbeam_channel::unbounded::<(Request, crossbeam_channel::Sender<Reply>)>();
    {
        let connected = connected.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let queries = queries.clone();
                let connected = connected.clone();
                connected.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let _ = answer_connection(stream, &queries);
                    connected.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
    }
    let mut last_seen = Instant::now();
    loop {
        match incoming.recv_timeout(Duration::from_secs(5)) {
            Ok((request, reply)) => {
                let _ = reply.send(answer(&mut analyzer, &manifest, request));
                last_seen = Instant::now();
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if connected.load(Ordering::SeqCst) > 0 {
                    last_seen = Instant::now();
                } else if last_seen.elapsed() >= idle_exit {
                    return Ok(());
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

fn answer_connection(
    stream: UnixStream,
    queries: &crossbeam_channel::Sender<(Request, crossbeam_channel::Sender<Reply>)>,
) -> Result<()> {
    let mut writer = stream.try_clone()?;
    for line in BufReader::new(stream).lines() {
        let request: Request = serde_json::from_str(&line?)?;
        let (reply, wait) = crossbeam_channel::bounded(1);
        queries.send((request, reply))?;
        let reply = wait.recv()?;
        serde_json::to_writer(&mut writer, &reply)?;
        writer.write_all(b"\n")?;
    }
    Ok(())
}

/// `manifest` with the lines of each table sorted, and the tables too: evcxr writes a crate's
/// dependencies in hash-map order, so two contexts with the same dependencies write different
/// texts. Equal for manifests that only differ in that order.
pub fn canonical_manifest(manifest: &str) -> String {
    let mut tables: Vec<Vec<&str>> = vec![vec![]];
    for line in manifest.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with('[') {
            tables.push(vec![line]);
        } else {
            tables.last_mut().expect("one table at least").push(line);
        }
    }
    let mut tables: Vec<String> = tables
        .into_iter()
        .map(|mut lines| {
            let body = if lines.first().is_some_and(|l| l.starts_with('[')) { 1 } else { 0 };
            lines[body..].sort_unstable();
            lines.join("\n")
        })
        .collect();
    tables.sort_unstable();
    tables.join("\n")
}

fn answer(analyzer: &mut RustAnalyzer, manifest: &str, request: Request) -> Reply {
    if canonical_manifest(&request.manifest) != manifest {
        return Reply::Refused("the context's Cargo.toml differs from the service's".into());
    }
    if let Err(e) = analyzer.set_source(request.source) {
        return Reply::Refused(format!("{e:#}"));
    }
    match request.query {
        Query::Variables { function } => match analyzer.top_level_variables(&function) {
            Ok(variables) => Reply::Variables(
                variables
                    .into_iter()
                .map(|(name, info)| {
                    let ty = match info.type_name {
                        TypeName::Named(n) => WireType::Named(n),
                        TypeName::Closure => WireType::Closure,
                        TypeName::Unknown => WireType::Unknown,
                    };
                    (name, ty, info.is_mutable)
                })
                .collect(),
            ),
            Err(e) => Reply::Refused(format!("{e:#}")),
        },
        Query::Completions { position } => match analyzer.completions(position) {
            Ok(c) => Reply::Completions {
                items: c
                    .completions
                    .into_iter()
                    .map(|c| (c.code, c.kind.to_owned(), c.label))
                    .collect(),
                start_offset: c.start_offset,
                end_offset: c.end_offset,
            },
            Err(e) => Reply::Failed(format!("{e:#}")),
        },
        Query::Hover { offset, markdown } => match analyzer.hover_markup(offset, markdown) {
            Ok(markup) => Reply::Hover(markup),
            Err(e) => Reply::Failed(format!("{e:#}")),
        },
    }
}

/// A context's connection to a shared analyzer; `None` answers mean "answer it yourself"
/// (from then on), `Some(Err(_))` that the query itself failed.
pub(crate) struct AnalyzerClient {
    socket: PathBuf,
    stream: Option<BufReader<UnixStream>>,
    /// Set after the service refused or failed: this context answers its own queries from then on.
    given_up: bool,
}

impl AnalyzerClient {
    pub(crate) fn new(socket: PathBuf) -> AnalyzerClient {
        AnalyzerClient {
            socket,
            stream: None,
            given_up: false,
        }
    }

    pub(crate) fn variables(
        &mut self,
        manifest: &str,
        source: &str,
        function: &str,
    ) -> Option<HashMap<String, VariableInfo>> {
        let query = Query::Variables {
            function: function.to_owned(),
        };
        match self.ask(manifest, source, query)? {
            Reply::Variables(vars) => Some(
                vars.into_iter()
                    .map(|(name, ty, is_mutable)| {
                        let type_name = match ty {
                            WireType::Named(n) => TypeName::Named(n),
                            WireType::Closure => TypeName::Closure,
                            WireType::Unknown => TypeName::Unknown,
                        };
                        (
                            name,
                            VariableInfo {
                                type_name,
                                is_mutable,
                            },
                        )
                    })
                    .collect(),
            ),
            _ => self.give_up(),
        }
    }

    pub(crate) fn completions(
        &mut self,
        manifest: &str,
        source: &str,
        position: usize,
    ) -> Option<Result<Completions>> {
        match self.ask(manifest, source, Query::Completions { position })? {
            Reply::Failed(e) => Some(Err(anyhow::anyhow!(e))),
            Reply::Completions {
                items,
                start_offset,
                end_offset,
            } => Some(Ok(Completions {
                completions: items
                    .into_iter()
                    .map(|(code, kind, label)| Completion {
                        code,
                        kind: static_kind(&kind),
                        label,
                    })
                    .collect(),
                start_offset,
                end_offset,
            })),
            _ => self.give_up(),
        }
    }

    pub(crate) fn hover(
        &mut self,
        manifest: &str,
        source: &str,
        offset: u32,
        markdown: bool,
    ) -> Option<Result<Option<String>>> {
        match self.ask(manifest, source, Query::Hover { offset, markdown })? {
            Reply::Hover(markup) => Some(Ok(markup)),
            Reply::Failed(e) => Some(Err(anyhow::anyhow!(e))),
            _ => self.give_up(),
        }
    }

    fn give_up<T>(&mut self) -> Option<T> {
        self.given_up = true;
        self.stream = None;
        None
    }

    fn ask(&mut self, manifest: &str, source: &str, query: Query) -> Option<Reply> {
        if self.given_up {
            return None;
        }
        let request = Request {
            manifest: manifest.to_owned(),
            source: source.to_owned(),
            query,
        };
        match self.exchange(&request) {
            Ok(reply) => Some(reply),
            Err(_) => self.give_up(),
        }
    }

    fn exchange(&mut self, request: &Request) -> Result<Reply> {
        if self.stream.is_none() {
            let stream = connect(&self.socket)?;
            // A first query waits for the graph to load (tens of seconds); a service that answers
            // nothing for this long is treated as gone, and this context answers itself.
            stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
            self.stream = Some(BufReader::new(stream));
        }
        let stream = self.stream.as_mut().expect("connected above");
        let mut line = serde_json::to_string(request)?;
        line.push('\n');
        stream.get_mut().write_all(line.as_bytes())?;
        let mut answer = String::new();
        if stream.read_line(&mut answer)? == 0 {
            bail!("the analyzer service closed the connection");
        }
        Ok(serde_json::from_str(&answer)?)
    }
}

/// The longest wait for one reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);

/// Connects to the service, allowing it a moment to bind its socket after being started.
fn connect(socket: &Path) -> Result<UnixStream> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match UnixStream::connect(socket) {
            Ok(stream) => return Ok(stream),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("connecting to {}", socket.display()));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn static_kind(kind: &str) -> &'static str {
    match kind {
        "function" => "function",
        "class" => "class",
        "module" => "module",
        "keyword" => "keyword",
        _ => "instance",
    }
}
