//! The kernel's "stop after this step" request. `arwkv-kernel` gives its evaluation process a file
//! path in `ARWKV_KERNEL_INTERRUPT_FILE` and creates that file when the user interrupts; training
//! loops poll `interrupt_requested()` once per step, finish the step, save and return. A file (not
//! a static) because every notebook cell holds its own copy of the library.

/// Environment variable naming the interrupt file.
pub const INTERRUPT_FILE_ENV: &str = "ARWKV_KERNEL_INTERRUPT_FILE";

/// Whether the kernel asked the running cell to stop.
pub fn interrupt_requested() -> bool {
    std::env::var_os(INTERRUPT_FILE_ENV).is_some_and(|p| std::path::Path::new(&p).exists())
}
