//! Why a cell failed, in the shape of Jupyter's `error` content: shared by the engine (compile
//! errors, a dead evaluation process), the router (a panic in the cell) and both front ends.

/// Why a cell failed, as Jupyter's `error` content.
#[derive(Clone, Debug, PartialEq)]
pub struct CellError {
    /// Error class.
    pub ename: String,
    /// One-line message.
    pub evalue: String,
    /// Lines shown to the user.
    pub traceback: Vec<String>,
}
