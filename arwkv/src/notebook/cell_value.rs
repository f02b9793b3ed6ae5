//! A cell's final value, shown in one compile. evcxr ends a cell whose last line is an expression
//! with `(expr).evcxr_display();` and, when that does not compile (the type has no such method),
//! compiles the whole cell a second time with a `{:?}` fallback. The kernel's prelude imports
//! [`CellValue`], which gives every `Debug` type that method, printing exactly what the fallback
//! prints; a type's own inherent `evcxr_display` (Plotly's `Plot`, for one) still wins, because
//! Rust picks inherent methods before trait methods. Expression cells then compile once.

use std::fmt::Debug;
use std::io::Write;

/// The `evcxr_display` method for every `Debug` value (see the module doc).
pub trait CellValue {
    /// Sends `{:?}` of the value as the cell's `text/plain` result.
    fn evcxr_display(&self);
}

impl<T: Debug + ?Sized> CellValue for T {
    fn evcxr_display(&self) {
        let mut out = std::io::stdout().lock();
        // The same framing evcxr's own fallback uses; a closed stdout has nobody to tell.
        let _ = write!(
            out,
            "EVCXR_BEGIN_CONTENT text/plain\n{self:?}\nEVCXR_END_CONTENT\n"
        );
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_debug_value_has_the_method_and_an_inherent_one_wins() {
        #[derive(Debug)]
        struct Rich;
        impl Rich {
            fn evcxr_display(&self) -> &'static str {
                "inherent"
            }
        }
        assert_eq!(Rich.evcxr_display(), "inherent");
        // Compiles only because the trait supplies the method.
        (1 + 1).evcxr_display();
        "text".evcxr_display();
    }
}
