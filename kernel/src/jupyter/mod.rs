//! The Jupyter face: the five sockets of a connection file, message checking, and what the
//! front end asks of a kernel (history, completeness, kernelspec installation).

pub mod completeness;
pub mod history;
pub mod kernelspec;
pub mod server;
pub mod wire;
