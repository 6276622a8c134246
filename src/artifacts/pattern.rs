//! The glob language of `artifacts:` paths and excludes: `*` (within one
//! path segment), `**` (any number of segments), `?`, `[abc]`, `[!abc]`,
//! `[a-z]` and `{a,b}` alternatives (nestable). Alternatives are expanded
//! here into plain patterns matched by the `glob` crate, which needs no
//! regex engine: this keeps the static binary, copied into every build
//! container, small. `forgexec validate` and the collector share this code,
//! so a pattern that validates is one the build can match.

use std::fmt;

use glob::{MatchOptions, Pattern};

/// Most plain patterns one glob may expand to (`{a,b}{c,d}` is 4): far more
/// than a build needs, few enough that a hostile `.forge.yml` can't make
/// matching slow.
pub const MAX_ALTERNATIVES: usize = 256;

const OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: true,
    // `*` and `?` never match `/`; only `**` crosses directories.
    require_literal_separator: true,
    // `*` matches dotfiles, like `.forge.yml`'s authors expect of artifact
    // paths (`dist/*` includes `dist/.env.sample`).
    require_literal_leading_dot: false,
};

/// Why a glob is invalid. `position` counts characters from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternError {
    UnclosedAlternatives { position: usize },
    UnopenedAlternatives { position: usize },
    TooManyAlternatives,
    Syntax { position: usize, message: String },
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatternError::UnclosedAlternatives { position } => write!(
                f,
                "the `{{` at character {position} is never closed; add the `}}` \
                 (a literal `{{` is `[{{]`)"
            ),
            PatternError::UnopenedAlternatives { position } => write!(
                f,
                "the `}}` at character {position} closes no `{{`; remove it \
                 (a literal `}}` is `[}}]`)"
            ),
            PatternError::TooManyAlternatives => write!(
                f,
                "its `{{...}}` alternatives expand to more than {MAX_ALTERNATIVES} patterns"
            ),
            PatternError::Syntax { position, message } => {
                write!(f, "{message} (character {position})")
            }
        }
    }
}

impl std::error::Error for PatternError {}

/// One or more globs, matched against `/`-separated paths relative to the
/// workspace.
#[derive(Debug, Clone, Default)]
pub struct GlobSet {
    patterns: Vec<Pattern>,
}

impl GlobSet {
    /// An empty set, matching nothing.
    pub fn new() -> GlobSet {
        GlobSet::default()
    }

    /// Adds `glob` (its alternatives expanded), or says why it is invalid.
    pub fn add(&mut self, glob: &str) -> Result<(), PatternError> {
        for plain in expand_alternatives(glob)? {
            let pattern = Pattern::new(&plain).map_err(|e| PatternError::Syntax {
                // The glob crate counts characters (from 0) of the pattern it
                // was given: for a glob with alternatives, of the expansion.
                position: e.pos + 1,
                message: syntax_message(e.msg),
            })?;
            self.patterns.push(pattern);
        }
        Ok(())
    }

    /// Whether any glob matches `path` as a whole.
    pub fn is_match(&self, path: &str) -> bool {
        self.patterns.iter().any(|p| p.matches_with(path, OPTIONS))
    }
}

/// Checks `glob` without keeping it: what `forgexec validate` runs.
pub fn check(glob: &str) -> Result<(), PatternError> {
    GlobSet::new().add(glob)
}

/// The glob crate's terse messages, said in the `.forge.yml` author's terms.
fn syntax_message(message: &str) -> String {
    match message {
        "invalid range pattern" => "an unclosed or invalid character class `[...]`".into(),
        "wildcards are either regular `*` or recursive `**`" => {
            "`***` is not a wildcard: use `*` (one segment) or `**` (any depth)".into()
        }
        "recursive wildcards must form a single path component" => {
            "`**` must be a whole path segment (`a/**/b`, not `a**`); use `*` within a segment"
                .into()
        }
        other => other.to_string(),
    }
}

/// Where the `]` closing a character class that opens at `open` is, by the
/// glob crate's rules (a `]` right after `[` or `[!` is a member).
fn class_end(chars: &[char], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if chars.get(i) == Some(&'!') {
        i += 1;
    }
    // The first member may be `]` itself.
    i += 1;
    while i < chars.len() {
        if chars[i] == ']' {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Expands `{a,b}` alternatives into plain patterns, outermost first, in
/// the order written. Brackets inside a character class are members, not
/// alternatives.
pub fn expand_alternatives(glob: &str) -> Result<Vec<String>, PatternError> {
    let chars: Vec<char> = glob.chars().collect();
    expand(&chars, 0)
}

/// The expansions of `chars`, whose first character is character `offset`
/// of the whole glob (for error positions).
fn expand(chars: &[char], offset: usize) -> Result<Vec<String>, PatternError> {
    let mut literal = String::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '[' => match class_end(chars, i) {
                Some(end) => {
                    literal.extend(&chars[i..=end]);
                    i = end + 1;
                    continue;
                }
                // Unclosed: the glob crate reports it with its position.
                None => literal.push('['),
            },
            '}' => {
                return Err(PatternError::UnopenedAlternatives {
                    position: offset + i + 1,
                })
            }
            '{' => {
                let (close, splits) =
                    group_end(chars, i).ok_or(PatternError::UnclosedAlternatives {
                        position: offset + i + 1,
                    })?;
                // Every alternative combines with every expansion of the rest.
                let tails = expand(&chars[close + 1..], offset + close + 1)?;
                let mut out = Vec::new();
                let mut start = i + 1;
                for end in splits.into_iter().chain(std::iter::once(close)) {
                    for head in expand(&chars[start..end], offset + start)? {
                        for tail in &tails {
                            if out.len() >= MAX_ALTERNATIVES {
                                return Err(PatternError::TooManyAlternatives);
                            }
                            out.push(format!("{literal}{head}{tail}"));
                        }
                    }
                    start = end + 1;
                }
                return Ok(out);
            }
            c => literal.push(c),
        }
        i += 1;
    }
    Ok(vec![literal])
}

/// For the `{` at `open`: the index of its `}` and of the commas that
/// separate its alternatives (nested groups and classes skipped).
fn group_end(chars: &[char], open: usize) -> Option<(usize, Vec<usize>)> {
    let mut depth = 0usize;
    let mut commas = Vec::new();
    let mut i = open + 1;
    while i < chars.len() {
        match chars[i] {
            '[' => {
                if let Some(end) = class_end(chars, i) {
                    i = end;
                }
            }
            '{' => depth += 1,
            '}' if depth == 0 => return Some((i, commas)),
            '}' => depth -= 1,
            ',' if depth == 0 => commas.push(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(globs: &[&str]) -> GlobSet {
        let mut set = GlobSet::new();
        for glob in globs {
            set.add(glob).unwrap_or_else(|e| panic!("{glob}: {e}"));
        }
        set
    }

    #[test]
    fn alternatives_expand_in_order_and_combine() {
        assert_eq!(expand_alternatives("a/b.txt").unwrap(), ["a/b.txt"]);
        assert_eq!(
            expand_alternatives("r/{junit,cov}/*.xml").unwrap(),
            ["r/junit/*.xml", "r/cov/*.xml"]
        );
        assert_eq!(
            expand_alternatives("{a,b}{1,2}").unwrap(),
            ["a1", "a2", "b1", "b2"]
        );
        assert_eq!(
            expand_alternatives("x{a,{b,c}d}").unwrap(),
            ["xa", "xbd", "xcd"]
        );
        assert_eq!(expand_alternatives("{,.gz}").unwrap(), ["", ".gz"]);
        // Inside a class, braces and commas are members.
        assert_eq!(expand_alternatives("[{,}]x").unwrap(), ["[{,}]x"]);
        assert_eq!(expand_alternatives("{[}],y}").unwrap(), ["[}]", "y"]);
    }

    #[test]
    fn unbalanced_and_explosive_alternatives_are_refused() {
        assert_eq!(
            expand_alternatives("ab{a,b").unwrap_err(),
            PatternError::UnclosedAlternatives { position: 3 }
        );
        assert_eq!(
            expand_alternatives("a}").unwrap_err(),
            PatternError::UnopenedAlternatives { position: 2 }
        );
        assert_eq!(
            expand_alternatives("{a,b}}").unwrap_err(),
            PatternError::UnopenedAlternatives { position: 6 }
        );
        let bomb = "{a,b}".repeat(9);
        assert_eq!(
            expand_alternatives(&bomb).unwrap_err(),
            PatternError::TooManyAlternatives
        );
        assert_eq!(expand_alternatives(&"{a,b}".repeat(8)).unwrap().len(), 256);
    }

    #[test]
    fn star_stays_in_its_segment_and_double_star_crosses() {
        let s = set(&["reports/*.xml"]);
        assert!(s.is_match("reports/junit.xml"));
        assert!(!s.is_match("reports/sub/junit.xml"));
        let s = set(&["**/*.so"]);
        assert!(s.is_match("lib.so"));
        assert!(s.is_match("dist/sub/lib.so"));
        let s = set(&["dist/**"]);
        assert!(s.is_match("dist/a"));
        assert!(s.is_match("dist/a/b/c"));
        assert!(!s.is_match("distx/a"));
        let s = set(&["a/**/b"]);
        assert!(s.is_match("a/b"));
        assert!(s.is_match("a/x/y/b"));
        let s = set(&["*"]);
        assert!(s.is_match(".hidden"));
        assert!(!s.is_match("a/b"));
    }

    #[test]
    fn classes_and_question_marks() {
        let s = set(&["log[0-9].txt", "v?", "[!a]z", "[[]x]"]);
        assert!(s.is_match("log7.txt"));
        assert!(!s.is_match("logx.txt"));
        assert!(s.is_match("v1"));
        assert!(!s.is_match("v/"));
        assert!(s.is_match("bz"));
        assert!(!s.is_match("az"));
        assert!(s.is_match("[x]"));
    }

    #[test]
    fn alternatives_match() {
        let s = set(&["reports/{junit,coverage}/*.xml", "*.{log,txt}"]);
        assert!(s.is_match("reports/junit/a.xml"));
        assert!(s.is_match("reports/coverage/b.xml"));
        assert!(!s.is_match("reports/other/b.xml"));
        assert!(s.is_match("build.log"));
        assert!(s.is_match("notes.txt"));
        assert!(!s.is_match("notes.md"));
    }

    #[test]
    fn syntax_errors_say_where() {
        let err = check("target/[abc").unwrap_err();
        assert_eq!(
            err.to_string(),
            "an unclosed or invalid character class `[...]` (character 8)"
        );
        let err = check("a**").unwrap_err();
        assert!(err.to_string().contains("whole path segment"), "{err}");
        let err = check("{a,b").unwrap_err();
        assert!(
            err.to_string().contains("character 1 is never closed"),
            "{err}"
        );
        // Positions count characters, not bytes.
        let err = check("ü/[ab").unwrap_err();
        assert!(err.to_string().ends_with("(character 3)"), "{err}");
        let err = check("aü[x").unwrap_err();
        assert!(err.to_string().ends_with("(character 3)"), "{err}");
        check("dist/**").expect("valid");
        check("ü/[ä]").expect("valid");
    }
}
