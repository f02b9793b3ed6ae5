//! Notebook tools: reading and writing `.ipynb` files, parameter cells, the headless runner
//! (`arwkv-kernel run`) and the exporter to a Rust program (`arwkv-kernel export`).

pub mod cell_code;
pub mod export;
pub mod notebook_file;
pub mod parameters;
pub mod runner;
