//! `is_complete` for Rust cells (what `jupyter console` asks before running a line): a small lexer
//! tracks brackets, strings, chars and comments. Unclosed brackets, an open string or block comment,
//! or a trailing binary operator → incomplete; a closing bracket that does not match → invalid;
//! otherwise complete. Evcxr `:commands` are complete lines.

/// The verdict and, for incomplete code, the indent of the next line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completeness {
    /// Ready to run.
    Complete,
    /// Needs more lines; the suggested indent.
    Incomplete(String),
    /// Cannot become valid by adding lines.
    Invalid,
}

/// Judges a cell.
pub fn completeness(code: &str) -> Completeness {
    let mut stack: Vec<char> = vec![];
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    let mut last_significant = None;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '/' if next == Some('*') => {
                let mut depth = 1;
                i += 2;
                while i < chars.len() && depth > 0 {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 1;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 1;
                    }
                    i += 1;
                }
                if depth > 0 {
                    return incomplete(&stack);
                }
                continue;
            }
            'r' if matches!(next, Some('"') | Some('#')) && !ident_before(&chars, i) => {
                // Raw string r#"…"#.
                let mut j = i + 1;
                let mut hashes = 0;
                while chars.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if chars.get(j) != Some(&'"') {
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    match chars.get(j) {
                        None => return incomplete(&stack),
                        Some('"') if (1..=hashes).all(|h| chars.get(j + h) == Some(&'#')) => {
                            i = j + 1 + hashes;
                            break;
                        }
                        _ => j += 1,
                    }
                }
                last_significant = Some('"');
                continue;
            }
            '"' => {
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return incomplete(&stack),
                        Some('\\') => i += 2,
                        Some('"') => break,
                        _ => i += 1,
                    }
                }
                last_significant = Some('"');
            }
            '\'' => {
                // A char literal ('a', '\n', '\u{1F600}') or a lifetime ('a) — skip a literal only.
                if next == Some('\\') {
                    let mut j = i + 2;
                    while j < chars.len() && chars[j] != '\'' && chars[j] != '\n' {
                        j += 1;
                    }
                    i = j;
                } else if chars.get(i + 2) == Some(&'\'') {
                    i += 2;
                }
                last_significant = Some('\'');
            }
            '(' | '[' | '{' => {
                stack.push(c);
                last_significant = Some(c);
            }
            ')' | ']' | '}' => {
                let open = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if stack.pop() != Some(open) {
                    return Completeness::Invalid;
                }
                last_significant = Some(c);
            }
            c if c.is_whitespace() => {}
            c => last_significant = Some(c),
        }
        i += 1;
    }
    if !stack.is_empty() {
        return incomplete(&stack);
    }
    let trimmed = code.trim_end();
    let dangling = [
        "+", "-", "*", "/", "=", "&&", "||", "|", "&", ".", ",", "->", "=>", "::",
    ];
    let is_command = trimmed
        .lines()
        .all(|l| l.trim_start().starts_with(':') || l.trim().is_empty());
    if !is_command && dangling.iter().any(|op| trimmed.ends_with(op)) && last_significant.is_some()
    {
        return incomplete(&stack);
    }
    Completeness::Complete
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

fn incomplete(stack: &[char]) -> Completeness {
    Completeness::Incomplete("    ".repeat(stack.len().max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_judged_like_a_rust_reader() {
        for complete in [
            "1 + 1",
            "let x = 1;",
            "fn f() {}",
            ":dep serde = \"1\"",
            "let s = \"}\";",
            "// {",
            "let c = '{';",
            "fn f<'a>(x: &'a str) {}",
            "let r = r#\"{\"#;",
            "",
        ] {
            assert_eq!(
                completeness(complete),
                Completeness::Complete,
                "{complete:?}"
            );
        }
        for incomplete in [
            "fn f() {",
            "let v = vec![1,",
            "let s = \"abc",
            "/* open",
            "1 +",
            "let x = foo\n    .bar()\n    .",
        ] {
            assert!(
                matches!(completeness(incomplete), Completeness::Incomplete(_)),
                "{incomplete:?}"
            );
        }
        for invalid in ["let x = 1 }", ")", "fn f() { ]"] {
            assert_eq!(completeness(invalid), Completeness::Invalid, "{invalid:?}");
        }
        assert_eq!(
            completeness("fn f() {\n if x {"),
            Completeness::Incomplete("        ".into())
        );
    }
}
