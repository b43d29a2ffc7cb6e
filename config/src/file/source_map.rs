//! Maps config keys to places in the TOML text and back, so every problem can
//! name the file, line, column and key. Built from toml's spanned parse tree.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Every key path of a document (`vpn.pool`, `group[1].subnets[0]`) with the
/// byte spans of its key (when it has one) and its value.
pub(crate) struct SourceMap<'a> {
    text: &'a str,
    entries: Vec<Entry>,
}

struct Entry {
    path: String,
    key: Option<Range<usize>>,
    value: Range<usize>,
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub line: usize,
    pub column: usize,
}

impl<'a> SourceMap<'a> {
    /// Builds the map; a text that does not parse gives an empty map (the
    /// parse error itself carries its own span).
    pub(crate) fn new(text: &'a str) -> Self {
        let mut entries = Vec::new();
        if let Ok(root) = DeTable::parse(text) {
            walk_table(root.get_ref(), "", &mut entries);
        }
        Self { text, entries }
    }

    /// Where `path` is written: its value, or failing that the nearest
    /// enclosing key that is written, or the start of the file.
    pub(crate) fn locate(&self, path: &str) -> Position {
        let mut path = path;
        loop {
            if let Some(entry) = self.entries.iter().find(|e| e.path == path) {
                return self.position(entry.value.start);
            }
            match path.rfind(['.', '[']) {
                Some(cut) => path = &path[..cut],
                None => return Position { line: 1, column: 1 },
            }
        }
    }

    /// The innermost key path whose key or value covers byte `offset`.
    pub(crate) fn path_at(&self, offset: usize) -> Option<&str> {
        self.entries
            .iter()
            .flat_map(|e| {
                [e.key.clone(), Some(e.value.clone())]
                    .into_iter()
                    .flatten()
                    .map(move |r| (e, r))
            })
            .filter(|(_, r)| r.start <= offset && offset < r.end.max(r.start + 1))
            .min_by_key(|(_, r)| r.end - r.start)
            .map(|(e, _)| e.path.as_str())
    }

    pub(crate) fn position(&self, offset: usize) -> Position {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            line,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

fn walk_table(table: &DeTable<'_>, prefix: &str, out: &mut Vec<Entry>) {
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        walk_value(value, path, Some(key.span()), out);
    }
}

fn walk_value(
    value: &Spanned<DeValue<'_>>,
    path: String,
    key: Option<Range<usize>>,
    out: &mut Vec<Entry>,
) {
    match value.get_ref() {
        DeValue::Table(table) => walk_table(table, &path, out),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_value(item, format!("{path}[{i}]"), None, out);
            }
        }
        _ => {}
    }
    out.push(Entry {
        path,
        key,
        value: value.span(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "[vpn]\npool = \"10.0.0.0/8\"\n\n[[group]]\nname = \"a\"\nsubnets = [\"x\", \"10.0.0.0/24\"]\n";

    #[test]
    fn locates_nested_values_and_array_items() {
        let map = SourceMap::new(DOC);
        assert_eq!(map.locate("vpn.pool"), Position { line: 2, column: 8 });
        assert_eq!(
            map.locate("group[0].subnets[1]"),
            Position {
                line: 6,
                column: 17
            }
        );
        // Missing keys fall back to the nearest written ancestor.
        assert_eq!(map.locate("group[0].ports").line, 4);
        assert_eq!(map.locate("nothing.here"), Position { line: 1, column: 1 });
    }

    #[test]
    fn finds_the_innermost_path_at_an_offset() {
        let map = SourceMap::new(DOC);
        let offset = DOC.find("\"x\"").map(|o| o + 1);
        assert_eq!(
            offset.and_then(|o| map.path_at(o)),
            Some("group[0].subnets[0]")
        );
        let key = DOC.find("pool");
        assert_eq!(key.and_then(|o| map.path_at(o)), Some("vpn.pool"));
    }
}
