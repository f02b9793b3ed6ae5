//! The evaluation session: evcxr on its own thread with the `arwkv` prelude, cell output routed to
//! iopub events, cooperative interrupt, and the build directories it compiles in. Used by the Jupyter
//! server and by the headless runner alike.

pub mod analyzer_graph;
pub mod build_dir;
pub mod cargo_progress;
pub mod cell_error;
pub mod engine;
pub mod router;
pub mod shared_analyzer;

use anyhow::{Context, Result};
use crossbeam_channel::Sender;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use engine::{EngineConfig, EngineHandles, InputBridge};
use router::{IopubEvent, RouterCommand};

/// A started session: the engine thread and the output router between it and the front end.
pub struct Session {
    /// The engine's requests, prelude status and evaluation process.
    pub engine: EngineHandles,
    /// Commands to the output router (cell start, extra stderr).
    pub router: Sender<RouterCommand>,
    /// Where the router publishes; the caller may publish its own events (status, input) here too.
    pub publish: UnboundedSender<IopubEvent>,
    /// What the router published, in order.
    pub published: UnboundedReceiver<IopubEvent>,
}

/// Starts the output router and the engine; the engine's input prompts go to `stdin`.
pub fn start(config: EngineConfig, stdin: Sender<InputBridge>) -> Result<Session> {
    let (publish, published) = unbounded_channel::<IopubEvent>();
    let (router_tx, router_rx) = crossbeam_channel::unbounded();
    let out = publish.clone();
    std::thread::Builder::new()
        .name("output-router".into())
        .spawn(move || router::run(router_rx, out))
        .context("starting the output router")?;
    let engine = engine::start(config, router_tx.clone(), stdin)?;
    Ok(Session {
        engine,
        router: router_tx,
        publish,
        published,
    })
}
