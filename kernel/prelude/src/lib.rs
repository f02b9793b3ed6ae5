//! `arwkv` and Burn as one shared library for the kernel's cells: every cell links this library
//! dynamically, so all cells of a session share one copy of the library's and Burn's statics (device
//! runtimes, GPU runner threads), and a cell's own `.so` holds only the cell's code.

pub use arwkv;
pub use burn;
