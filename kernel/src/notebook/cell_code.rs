//! What one cell's code holds, split the way evcxr reads it: leading `:` magics and `!` shell lines,
//! then Rust top-level pieces — items (kept at module scope, latest definition wins), statements
//! (run in order) and the trailing expression (its value is shown). Used by the exporter and by
//! parameter injection. The split keeps each piece's source text verbatim, comments included.

use ra_ap_syntax::ast::{self, HasName};
use ra_ap_syntax::{AstNode, Edition, SourceFile, SyntaxNode};

/// One top-level piece of a cell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// An evcxr magic line (`:dep …`, `:opt 2`).
    Magic(String),
    /// A shell line (`!ls`).
    Shell(String),
    /// An item (`fn`, `struct`, `use`, `impl`, …): `key` names it for "latest wins" (None: keep every copy).
    Item {
        /// `fn helper`, `struct Row`, … (None for `use`, `impl` and others without one name).
        key: Option<String>,
        /// Source text.
        code: String,
    },
    /// A statement (`let`, an expression with `;`, a block-like expression).
    Statement(String),
    /// A `let` statement: its binding name, type and initializer (for parameter cells).
    Let {
        /// The whole statement's source.
        code: String,
        /// The bound name (a plain identifier pattern), if any.
        name: Option<String>,
        /// The declared type's source.
        ty: Option<String>,
        /// The initializer's source.
        init: Option<String>,
    },
    /// The cell's last expression (no `;`): evcxr shows its value.
    Tail(String),
}

/// A syntax error in a cell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxProblem {
    /// 1-based line in the cell.
    pub line: usize,
    /// The parser's message.
    pub message: String,
}

impl std::fmt::Display for SyntaxProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

const WRAP_OPEN: &str = "fn __cell() {\n";

/// Splits a cell into its pieces.
pub fn split(code: &str) -> Result<Vec<Piece>, SyntaxProblem> {
    let mut pieces = vec![];
    let mut lines = code.split_inclusive('\n').peekable();
    let mut consumed = 0;
    // evcxr: magics and shell lines count only before the first Rust line.
    while let Some(line) = lines.peek() {
        let t = line.trim();
        if t.starts_with(':') {
            pieces.push(Piece::Magic(t.to_string()));
        } else if let Some(rest) = t.strip_prefix('!') {
            pieces.push(Piece::Shell(rest.trim().to_string()));
        } else if !(t.is_empty() || t.starts_with("//")) {
            break;
        }
        consumed += line.len();
        lines.next();
    }
    let rust = &code[consumed..];
    if rust.trim().is_empty() {
        return Ok(pieces);
    }
    let wrapped = format!("{WRAP_OPEN}{rust}\n}}");
    let parsed = SourceFile::parse(&wrapped, Edition::Edition2024);
    if let Some(e) = parsed.errors().first() {
        let offset = usize::from(e.range().start()).saturating_sub(WRAP_OPEN.len());
        let line =
            code[..consumed].lines().count() + rust[..offset.min(rust.len())].lines().count();
        return Err(SyntaxProblem {
            line: line.max(1),
            message: e.to_string(),
        });
    }
    let Some(list) = parsed
        .tree()
        .syntax()
        .children()
        .find_map(ast::Fn::cast)
        .and_then(|f| f.body())
        .and_then(|b| b.stmt_list())
    else {
        return Ok(pieces);
    };
    let nodes: Vec<SyntaxNode> = list.syntax().children().collect();
    let mut start = 0;
    for (i, node) in nodes.iter().enumerate() {
        let end = if i + 1 == nodes.len() {
            rust.len()
        } else {
            (usize::from(node.text_range().end()) - WRAP_OPEN.len()).min(rust.len())
        };
        let text = rust[start..end].to_string();
        start = end;
        pieces.push(classify(node, text));
    }
    Ok(pieces)
}

fn classify(node: &SyntaxNode, code: String) -> Piece {
    if let Some(stmt) = ast::Stmt::cast(node.clone()) {
        return match stmt {
            ast::Stmt::Item(ast::Item::MacroCall(_)) => Piece::Statement(code),
            ast::Stmt::Item(item) => Piece::Item {
                key: item_key(&item),
                code,
            },
            ast::Stmt::LetStmt(l) => {
                let name = match l.pat() {
                    Some(ast::Pat::IdentPat(p)) => p.name().map(|n| n.text().to_string()),
                    _ => None,
                };
                Piece::Let {
                    code,
                    name,
                    ty: l.ty().map(|t| t.syntax().text().to_string()),
                    init: l.initializer().map(|e| e.syntax().text().to_string()),
                }
            }
            ast::Stmt::ExprStmt(_) => Piece::Statement(code),
        };
    }
    match ast::Expr::cast(node.clone()) {
        // Block-like expressions are statements whose value is `()`.
        Some(
            ast::Expr::ForExpr(_)
            | ast::Expr::WhileExpr(_)
            | ast::Expr::LoopExpr(_)
            | ast::Expr::BlockExpr(_),
        ) => Piece::Statement(code),
        Some(ast::Expr::IfExpr(e)) if e.else_branch().is_none() => Piece::Statement(code),
        Some(_) => Piece::Tail(code),
        None => Piece::Statement(code),
    }
}

fn item_key(item: &ast::Item) -> Option<String> {
    let named = |kind: &str, n: Option<ast::Name>| n.map(|n| format!("{kind} {}", n.text()));
    match item {
        ast::Item::Fn(x) => named("fn", x.name()),
        ast::Item::Struct(x) => named("struct", x.name()),
        ast::Item::Enum(x) => named("enum", x.name()),
        ast::Item::Union(x) => named("union", x.name()),
        ast::Item::Trait(x) => named("trait", x.name()),
        ast::Item::TypeAlias(x) => named("type", x.name()),
        ast::Item::Const(x) => named("const", x.name()),
        ast::Item::Static(x) => named("static", x.name()),
        ast::Item::Module(x) => named("mod", x.name()),
        ast::Item::MacroRules(x) => named("macro_rules", x.name()),
        _ => None,
    }
}

/// Whether `text` parses as one Rust expression (a parameter value).
pub fn is_expression(text: &str) -> bool {
    let wrapped = format!("{WRAP_OPEN}let __value = {text};\n}}");
    let parsed = SourceFile::parse(&wrapped, Edition::Edition2024);
    parsed.errors().is_empty()
        && matches!(
            split(&format!("let __value = {text};")).as_deref(),
            Ok([Piece::Let { .. }])
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics_items_statements_and_the_tail_are_told_apart() {
        let cell = ":dep rand = \"0.9\"\n// a comment\nuse std::fmt;\nfn double(x: u32) -> u32 { x * 2 }\n\
                    let steps: u64 = 10;\nfor i in 0..2 { println!(\"{i}\"); }\nprintln!(\"x\");\ndouble(3)";
        let pieces = split(cell).unwrap();
        assert_eq!(pieces[0], Piece::Magic(":dep rand = \"0.9\"".into()));
        assert!(
            matches!(&pieces[1], Piece::Item { key: None, code } if code.contains("use std::fmt"))
        );
        assert!(
            matches!(&pieces[2], Piece::Item { key: Some(k), .. } if k == "fn double"),
            "{pieces:?}"
        );
        assert!(matches!(
            &pieces[3],
            Piece::Let { name: Some(n), ty: Some(t), init: Some(i), .. } if n == "steps" && t == "u64" && i == "10"
        ));
        assert!(matches!(&pieces[4], Piece::Statement(s) if s.contains("for i")));
        assert!(matches!(&pieces[5], Piece::Statement(s) if s.contains("println")));
        assert!(
            matches!(&pieces[6], Piece::Tail(t) if t.trim() == "double(3)"),
            "{pieces:?}"
        );
        assert_eq!(pieces.len(), 7);
    }

    #[test]
    fn the_pieces_keep_every_byte_of_the_rust_part() {
        let cell = "let a = 1; // one\n\n/// doc\nfn f() {}\nlet s = \"multi\n  line\";\na + 1\n";
        let text: String = split(cell)
            .unwrap()
            .iter()
            .map(|p| match p {
                Piece::Item { code, .. }
                | Piece::Statement(code)
                | Piece::Let { code, .. }
                | Piece::Tail(code) => code.clone(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(text, cell);
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let e = split("let a = 1;\nlet b = ;\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn parameter_values_are_checked_as_expressions() {
        assert!(is_expression("20"));
        assert!(is_expression("Some(3)"));
        assert!(is_expression("\"cpu\""));
        assert!(!is_expression("1; drop(x)"));
        assert!(!is_expression("let"));
    }
}
