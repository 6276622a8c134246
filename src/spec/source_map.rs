//! Source map of a YAML document: which line and column each node (and each
//! mapping key) starts at, addressed by its path (`actions.lint[2].run`).
//! Built from yaml-rust2's marked event stream, which never expands
//! aliases, so this pass is linear in the file size. The same pass finds
//! every duplicate key and computes how large the document becomes once
//! aliases are expanded, so alias bombs are refused before anything expands
//! them. Paths through aliases and `<<` merge keys are resolved to the
//! anchored definition.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Most nodes a document may have once its aliases are expanded.
pub const MAX_EXPANDED_NODES: u64 = 100_000;

/// Deepest nesting of collections accepted (serde_yaml refuses beyond 128,
/// and takes quadratic time getting there).
pub const MAX_DEPTH: usize = 100;

/// One step of a path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// Where a node is within the document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct YamlPath(pub Vec<Segment>);

impl YamlPath {
    pub fn root() -> Self {
        YamlPath(Vec::new())
    }

    pub fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_string()));
        YamlPath(segments)
    }

    pub fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        YamlPath(segments)
    }
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document)");
        }
        for (n, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if n == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl From<Marker> for Position {
    fn from(marker: Marker) -> Self {
        Position {
            line: marker.line(),
            column: marker.col() + 1,
        }
    }
}

/// Which part of a mapping entry a diagnostic points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The key (unknown or duplicate keys).
    Key,
    /// The value (bad values).
    Value,
}

#[derive(Debug, Clone, Copy)]
struct NodeLocation {
    key: Option<Position>,
    value: Position,
}

/// A key that appears twice in one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    pub path: YamlPath,
    pub key: String,
    pub at: Position,
    pub first: Position,
}

/// The document grows past [`MAX_EXPANDED_NODES`] through aliases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasBomb {
    /// The node (usually an alias) whose expansion crossed the limit.
    pub at: Position,
    /// Whether aliases were expanded on the way (else the file is just big).
    pub by_alias: bool,
}

/// Line and column of every node of the first document.
#[derive(Debug, Default)]
pub struct SourceMap {
    nodes: HashMap<YamlPath, NodeLocation>,
    /// Paths holding an alias, to the anchor id.
    aliases: HashMap<YamlPath, usize>,
    /// Anchor id to the path of the anchored node.
    anchors: HashMap<usize, YamlPath>,
    /// Mapping path to the paths merged into it with `<<`, in order.
    merges: HashMap<YamlPath, Vec<YamlPath>>,
    /// Every duplicate key, in file order.
    pub duplicates: Vec<DuplicateKey>,
    /// Set when aliases expand the document past the limit.
    pub alias_bomb: Option<AliasBomb>,
    /// Expanded node count (saturating).
    pub expanded_nodes: u64,
    /// Where nesting first goes deeper than [`MAX_DEPTH`]; mapping stops there.
    pub too_deep: Option<Position>,
    /// Where the first `<<` key is, for merge errors.
    pub first_merge_key: Option<Position>,
    /// The text of each plain (unquoted) scalar value, as written.
    plain: HashMap<YamlPath, String>,
}

/// A YAML syntax error found by yaml-rust2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub at: Position,
    pub message: String,
}

impl SyntaxError {
    /// yaml-rust2 counts flow nesting (`[[[`) in a byte and reports the
    /// overflow only as this text.
    pub fn is_flow_nesting_overflow(&self) -> bool {
        self.message == "recursion limit exceeded"
    }
}

impl SourceMap {
    /// Map `text` (its first document). On a syntax error the map covers
    /// what came before it (so an alias bomb in front is still measured).
    pub fn build(text: &str) -> (SourceMap, Option<SyntaxError>) {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        // Pull events one by one: `Parser::load` recurses per nesting level
        // and overflows the stack on deeply nested input.
        loop {
            match parser.next_token() {
                Ok((Event::StreamEnd, _)) => break,
                Ok((event, marker)) => builder.on_event(event, marker),
                Err(err) => {
                    let error = SyntaxError {
                        at: Position::from(*err.marker()),
                        message: err.info().to_string(),
                    };
                    return (builder.map, Some(error));
                }
            }
            if builder.done || builder.map.too_deep.is_some() {
                break;
            }
        }
        (builder.map, None)
    }

    /// Where the node at `path` is: its key or its value. A path that is
    /// not in the file as such (made by a merge or unknown) falls back to
    /// the closest enclosing node that is.
    pub fn position(&self, path: &YamlPath, target: Target) -> Option<Position> {
        let mut current = YamlPath::root();
        let mut exact = true;
        for segment in &path.0 {
            match self.step(&current, segment) {
                Some(next) => current = next,
                None => {
                    exact = false;
                    break;
                }
            }
        }
        let location = self.nodes.get(&current)?;
        match (target, exact) {
            (Target::Key, true) => Some(location.key.unwrap_or(location.value)),
            _ => Some(location.value),
        }
    }

    /// The text of the plain scalar at `path` as the file writes it (not
    /// as YAML resolves it: `3.10`, not `3.1`), through aliases and merges.
    pub fn plain_text(&self, path: &YamlPath) -> Option<&str> {
        let mut current = YamlPath::root();
        for segment in &path.0 {
            current = self.step(&current, segment)?;
        }
        self.plain.get(&current).map(String::as_str)
    }

    /// Follow one segment from the (alias-resolved) node `from`.
    fn step(&self, from: &YamlPath, segment: &Segment) -> Option<YamlPath> {
        let mut candidates = vec![from.clone()];
        if let Some(sources) = self.merges.get(from) {
            candidates.extend(sources.iter().cloned());
        }
        for candidate in candidates {
            let mut next = candidate.clone();
            next.0.push(segment.clone());
            if self.nodes.contains_key(&next) {
                return Some(self.resolve_alias(next));
            }
        }
        None
    }

    fn resolve_alias(&self, mut path: YamlPath) -> YamlPath {
        // Anchors are defined before use, so this terminates; the bound is
        // a belt for malformed maps.
        for _ in 0..64 {
            match self.aliases.get(&path).and_then(|id| self.anchors.get(id)) {
                Some(target) => path = target.clone(),
                None => break,
            }
        }
        path
    }
}

enum Frame {
    Mapping {
        path: YamlPath,
        /// The key just read, waiting for its value.
        key: Option<(String, Position)>,
        seen: HashMap<String, Position>,
    },
    Sequence {
        path: YamlPath,
        next: usize,
        /// Set for the sequence value of a `<<` key: the mapping it merges into.
        merge_into: Option<YamlPath>,
    },
    /// A complex (non-scalar) key: its content is skipped.
    Skip { depth: usize },
}

#[derive(Default)]
struct Builder {
    map: SourceMap,
    stack: Vec<Frame>,
    /// Expanded size of each node being built (open collections).
    sizes: Vec<(usize, u64)>,
    anchor_sizes: HashMap<usize, u64>,
    aliases_seen: bool,
    done: bool,
}

enum Slot {
    Root,
    Key,
    Value {
        path: YamlPath,
        key: Option<Position>,
        merge_into: Option<YamlPath>,
    },
    Skipped,
}

impl Builder {
    /// Where the next node goes.
    fn slot(&mut self) -> Slot {
        match self.stack.last_mut() {
            None => Slot::Root,
            Some(Frame::Skip { .. }) => Slot::Skipped,
            Some(Frame::Sequence {
                path,
                next,
                merge_into,
            }) => {
                let slot = Slot::Value {
                    path: path.index(*next),
                    key: None,
                    merge_into: merge_into.clone(),
                };
                *next += 1;
                slot
            }
            Some(Frame::Mapping { path, key, .. }) => match key.take() {
                None => Slot::Key,
                Some((name, at)) => {
                    let merge_into = (name == "<<").then(|| path.clone());
                    Slot::Value {
                        path: path.key(&name),
                        key: Some(at),
                        merge_into,
                    }
                }
            },
        }
    }

    fn count(&mut self, weight: u64, at: Position) {
        self.map.expanded_nodes = self.map.expanded_nodes.saturating_add(weight);
        if self.map.expanded_nodes > MAX_EXPANDED_NODES && self.map.alias_bomb.is_none() {
            let by_alias = self.aliases_seen;
            self.map.alias_bomb = Some(AliasBomb { at, by_alias });
        }
        if let Some((_, size)) = self.sizes.last_mut() {
            *size = size.saturating_add(weight);
        }
    }

    fn node(&mut self, event: Event, at: Position) {
        let slot = self.slot();
        match slot {
            Slot::Skipped => {
                if let Some(Frame::Skip { depth }) = self.stack.last_mut() {
                    match event {
                        Event::MappingStart(..) | Event::SequenceStart(..) => *depth += 1,
                        _ => {}
                    }
                }
                return;
            }
            Slot::Key => {
                if let Event::Scalar(name, ..) = &event {
                    self.key(name.clone(), at);
                } else {
                    // A complex key: remember a placeholder and skip it.
                    if let Some(Frame::Mapping { key, .. }) = self.stack.last_mut() {
                        *key = Some(("?".to_string(), at));
                    }
                    if matches!(event, Event::MappingStart(..) | Event::SequenceStart(..)) {
                        self.stack.push(Frame::Skip { depth: 1 });
                    }
                }
                self.count(1, at);
                return;
            }
            Slot::Root | Slot::Value { .. } => {}
        }
        let (path, key, merge_into) = match slot {
            Slot::Value {
                path,
                key,
                merge_into,
            } => (path, key, merge_into),
            _ => (YamlPath::root(), None, None),
        };
        if key.is_some() && self.map.first_merge_key.is_none() && merge_into.is_some() {
            self.map.first_merge_key = key;
        }
        // An empty value (`KEY:` and nothing) is marked where the next
        // token starts, often on another line: point at its key instead.
        let at = match (&event, key) {
            (Event::Scalar(text, TScalarStyle::Plain, ..), Some(key_at)) if text.is_empty() => {
                key_at
            }
            _ => at,
        };
        self.map
            .nodes
            .insert(path.clone(), NodeLocation { key, value: at });
        match event {
            Event::Alias(id) => {
                self.map.aliases.insert(path.clone(), id);
                if let (Some(into), Some(target)) = (&merge_into, self.map.anchors.get(&id)) {
                    let target = target.clone();
                    self.map
                        .merges
                        .entry(into.clone())
                        .or_default()
                        .push(target);
                }
                let weight = self.anchor_sizes.get(&id).copied().unwrap_or(1);
                self.aliases_seen = true;
                self.count(weight, at);
            }
            Event::Scalar(text, style, anchor, _) => {
                if style == TScalarStyle::Plain {
                    self.map.plain.insert(path.clone(), text);
                }
                if anchor != 0 {
                    self.map.anchors.insert(anchor, path);
                    self.anchor_sizes.insert(anchor, 1);
                }
                self.count(1, at);
            }
            Event::MappingStart(anchor, _) => {
                if anchor != 0 {
                    self.map.anchors.insert(anchor, path.clone());
                }
                if let Some(into) = &merge_into {
                    self.map
                        .merges
                        .entry(into.clone())
                        .or_default()
                        .push(path.clone());
                }
                self.count(1, at);
                self.deeper(at);
                self.sizes.push((anchor, 1));
                self.stack.push(Frame::Mapping {
                    path,
                    key: None,
                    seen: HashMap::new(),
                });
            }
            Event::SequenceStart(anchor, _) => {
                if anchor != 0 {
                    self.map.anchors.insert(anchor, path.clone());
                }
                self.count(1, at);
                self.deeper(at);
                self.sizes.push((anchor, 1));
                self.stack.push(Frame::Sequence {
                    path,
                    next: 0,
                    merge_into,
                });
            }
            _ => {}
        }
    }

    fn deeper(&mut self, at: Position) {
        if self.stack.len() >= MAX_DEPTH && self.map.too_deep.is_none() {
            self.map.too_deep = Some(at);
        }
    }

    fn key(&mut self, name: String, at: Position) {
        if let Some(Frame::Mapping { path, key, seen }) = self.stack.last_mut() {
            // yaml-rust2 marks a block mapping where its first `:` is; the
            // mapping really starts at its first key.
            if seen.is_empty() {
                if let Some(location) = self.map.nodes.get_mut(path) {
                    location.value = location.value.min(at);
                }
            }
            if let Some(first) = seen.get(&name) {
                self.map.duplicates.push(DuplicateKey {
                    path: path.key(&name),
                    key: name.clone(),
                    at,
                    first: *first,
                });
            } else {
                seen.insert(name.clone(), at);
            }
            *key = Some((name, at));
        }
    }

    fn end(&mut self) {
        if let Some(Frame::Skip { depth }) = self.stack.last_mut() {
            *depth -= 1;
            if *depth == 0 {
                self.stack.pop();
            }
            return;
        }
        self.stack.pop();
        if let Some((anchor, size)) = self.sizes.pop() {
            if anchor != 0 {
                self.anchor_sizes.insert(anchor, size);
            }
            if let Some((_, parent)) = self.sizes.last_mut() {
                // The parent counted 1 for the start of this collection;
                // its children were counted into `size` and the document
                // total as they came.
                *parent = parent.saturating_add(size.saturating_sub(1));
            }
        }
    }
}

impl Builder {
    fn on_event(&mut self, event: Event, marker: Marker) {
        if self.done {
            return;
        }
        let at = Position::from(marker);
        match event {
            Event::DocumentEnd => self.done = true,
            Event::Alias(_)
            | Event::Scalar(..)
            | Event::MappingStart(..)
            | Event::SequenceStart(..) => self.node(event, at),
            Event::MappingEnd | Event::SequenceEnd => self.end(),
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(map: &SourceMap, path: &YamlPath, target: Target) -> (usize, usize) {
        let position = map.position(path, target).expect("position");
        (position.line, position.column)
    }

    fn built(text: &str) -> SourceMap {
        let (map, error) = SourceMap::build(text);
        assert_eq!(error, None);
        map
    }

    fn p(segments: &[Segment]) -> YamlPath {
        YamlPath(segments.to_vec())
    }

    fn k(key: &str) -> Segment {
        Segment::Key(key.to_string())
    }

    #[test]
    fn keys_and_values_have_positions() {
        let text =
            "image: alpine\nactions:\n  lint:\n    - echo one\n    - run: [a, b]\n      name: x\n";
        let map = built(text);
        assert_eq!(at(&map, &p(&[k("image")]), Target::Key), (1, 1));
        assert_eq!(at(&map, &p(&[k("image")]), Target::Value), (1, 8));
        let lint = p(&[k("actions"), k("lint")]);
        assert_eq!(at(&map, &lint, Target::Key), (3, 3));
        assert_eq!(at(&map, &lint.index(0), Target::Value), (4, 7));
        assert_eq!(at(&map, &lint.index(1).key("run"), Target::Key), (5, 7));
        assert_eq!(at(&map, &lint.index(1).key("run"), Target::Value), (5, 12));
        assert_eq!(
            at(&map, &lint.index(1).key("run").index(1), Target::Value),
            (5, 16)
        );
        assert_eq!(at(&map, &lint.index(1).key("name"), Target::Key), (6, 7));
        // Unknown paths fall back to the closest known node's value.
        assert_eq!(at(&map, &lint.index(1).key("nope"), Target::Key), (5, 7));
        assert_eq!(
            format!("{}", lint.index(1).key("run")),
            "actions.lint[1].run"
        );
    }

    #[test]
    fn duplicates_are_all_found_at_every_level() {
        let text = "a: 1\nb:\n  c: 1\n  c: 2\na: 3\n";
        let map = built(text);
        let found: Vec<(String, usize, usize)> = map
            .duplicates
            .iter()
            .map(|d| (d.path.to_string(), d.at.line, d.first.line))
            .collect();
        assert_eq!(found, [("b.c".to_string(), 4, 3), ("a".to_string(), 5, 1)]);
    }

    #[test]
    fn aliases_and_merges_resolve_to_the_anchor() {
        let text = "x-base: &base\n  run: make\n  timeout: 5q\nsetup:\n  - <<: *base\n    name: n\n  - *base\n";
        let map = built(text);
        let merged = p(&[k("setup"), Segment::Index(0), k("timeout")]);
        assert_eq!(at(&map, &merged, Target::Value), (3, 12));
        let aliased = p(&[k("setup"), Segment::Index(1), k("run")]);
        assert_eq!(at(&map, &aliased, Target::Value), (2, 8));
        let own = p(&[k("setup"), Segment::Index(0), k("name")]);
        assert_eq!(at(&map, &own, Target::Key), (6, 5));
        assert_eq!(map.first_merge_key, Some(Position { line: 5, column: 5 }));
    }

    #[test]
    fn alias_bombs_are_measured_without_expanding() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..10 {
            let prev = level - 1;
            text.push_str(&format!(
                "a{level}: &a{level} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let map = built(&text);
        let bomb = map.alias_bomb.expect("bomb detected");
        assert!(bomb.at.line > 1);
        assert!(map.expanded_nodes > MAX_EXPANDED_NODES);
        let small = built("a: &a [1, 2]\nb: *a\nc: *a\n");
        assert_eq!(small.alias_bomb, None);
        // root + 3 keys + 3 sequences of 2 items
        assert_eq!(small.expanded_nodes, 1 + 3 + 3 * 3);
    }

    #[test]
    fn deep_nesting_stops_the_map_without_recursion() {
        let text = format!("a:\n  {}x\n", "- ".repeat(200_000));
        let (map, error) = SourceMap::build(&text);
        assert_eq!(error, None);
        let at = map.too_deep.expect("too deep");
        assert_eq!(at.line, 2);
        let (map, _) = SourceMap::build(&format!("a: {}", "[".repeat(50)));
        assert_eq!(map.too_deep, None);
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = SourceMap::build("a: [1, 2\n").1.expect("syntax error");
        assert!(err.at.line >= 1);
    }
}
