//! The session's input history for `history_request` (tail, range, search), one entry per
//! executed cell that asked to be stored, with its `text/plain` result.

/// One executed cell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Execution count.
    pub line: usize,
    /// The code.
    pub input: String,
    /// `text/plain` of the result ("" when none).
    pub output: String,
}

/// This session's history (session number 1, as the spec numbers the current session 0 or ≥ 1).
#[derive(Clone, Debug, Default)]
pub struct History {
    entries: Vec<Entry>,
}

/// The session number reported with every entry.
pub const SESSION: usize = 1;

impl History {
    /// Records a cell.
    pub fn push(&mut self, line: usize, input: &str, output: &str) {
        self.entries.push(Entry {
            line,
            input: input.to_string(),
            output: output.to_string(),
        });
    }

    /// The last `n` entries.
    pub fn tail(&self, n: usize) -> Vec<&Entry> {
        let start = self.entries.len().saturating_sub(n);
        self.entries[start..].iter().collect()
    }

    /// Entries with `start <= line < stop` (`stop` ≤ 0 counts from the end, as IPython does).
    pub fn range(&self, start: i64, stop: i64) -> Vec<&Entry> {
        let last = self.entries.last().map_or(0, |e| e.line as i64);
        let stop = if stop <= 0 { last + 1 + stop } else { stop };
        self.entries
            .iter()
            .filter(|e| (e.line as i64) >= start && (e.line as i64) < stop)
            .collect()
    }

    /// Entries whose input matches the glob `pattern` (`*`, `?`), newest last; with `unique`, each
    /// input once (its latest run); at most the last `n` (0 = all).
    pub fn search(&self, pattern: &str, unique: bool, n: usize) -> Vec<&Entry> {
        let mut hits: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| glob(pattern, &e.input))
            .collect();
        if unique {
            let mut seen = std::collections::HashSet::new();
            let mut kept: Vec<&Entry> = hits
                .iter()
                .rev()
                .filter(|e| seen.insert(e.input.as_str()))
                .copied()
                .collect();
            kept.reverse();
            hits = kept;
        }
        if n > 0 && hits.len() > n {
            hits.drain(..hits.len() - n);
        }
        hits
    }
}

/// Shell-style glob over the whole text: `*` any run, `?` any one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_range_and_search() {
        let mut h = History::default();
        for (i, code) in ["let a = 1;", "a + 1", "let b = 2;", "a + 1"]
            .iter()
            .enumerate()
        {
            h.push(i + 1, code, "");
        }
        assert_eq!(h.tail(2).iter().map(|e| e.line).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(
            h.range(2, 4).iter().map(|e| e.line).collect::<Vec<_>>(),
            [2, 3]
        );
        assert_eq!(h.range(1, 0).len(), 4);
        assert_eq!(h.search("let*", false, 0).len(), 2);
        assert_eq!(
            h.search("a + ?", true, 0)
                .iter()
                .map(|e| e.line)
                .collect::<Vec<_>>(),
            [4]
        );
        assert!(glob("*", "") && glob("a*c", "abbc") && !glob("a?c", "abbc"));
        // A `*` in the text must not be taken literally by a `*` in the pattern.
        assert!(glob("6 *", "6 * 7") && glob("*7", "6 * 7") && !glob("6 *8", "6 * 7"));
    }
}
