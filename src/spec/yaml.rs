//! The one place where the two YAML parsers meet. serde_yaml (libyaml)
//! gives the values; yaml-rust2, through [`SourceMap`], gives the line and
//! column of every node, finds duplicate keys and measures alias expansion
//! without expanding anything. A file is accepted only when both parsers
//! accept it: each refusal is reported with the message of the parser that
//! refused, at its position.

use serde::de::{self, Deserialize, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess};
use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Value};

use super::source_map::{Position, SourceMap, SyntaxError, MAX_EXPANDED_NODES};
use super::{Diagnostic, SpecError};

/// A parsed document: its values (merge keys applied) and where they are.
pub(crate) struct Document {
    pub value: Value,
    pub map: SourceMap,
}

/// Parse the UTF-8 `text` labelled `label`. Duplicate keys are not
/// refused here: they are in `map.duplicates`, for the validator to report
/// with every other problem.
pub(crate) fn parse(label: &str, text: &str) -> Result<Document, SpecError> {
    let (map, syntax) = SourceMap::build(text);
    refuse_alias_bomb(label, &map)?;
    refuse_deep_nesting(label, &map, syntax.as_ref())?;
    let mut value = match serde_yaml::from_str::<LastKeyWins>(text) {
        Ok(LastKeyWins(value)) => value,
        Err(err) => return Err(libyaml_error(label, text, &err)),
    };
    if let Some(syntax) = syntax {
        return Err(SpecError::Yaml {
            path: label.to_string(),
            line: syntax.at.line,
            column: syntax.at.column,
            message: format!("invalid YAML: {}", syntax.message),
            help: Some(syntax_help(text, syntax.at.line)),
        });
    }
    if value.is_null() {
        return Err(SpecError::Empty {
            path: label.to_string(),
        });
    }
    if let Err(err) = value.apply_merge() {
        let at = map
            .first_merge_key
            .unwrap_or(Position { line: 1, column: 1 });
        return Err(invalid(
            label,
            Diagnostic {
                line: at.line,
                column: at.column,
                path: String::new(),
                message: format!("bad `<<` merge key: {err}"),
                help: Some(
                    "merge a mapping, e.g. `<<: *defaults` where `&defaults` names a mapping"
                        .to_string(),
                ),
            },
        ));
    }
    Ok(Document { value, map })
}

fn invalid(label: &str, diagnostic: Diagnostic) -> SpecError {
    SpecError::Invalid {
        path: label.to_string(),
        diagnostics: vec![diagnostic],
    }
}

fn refuse_alias_bomb(label: &str, map: &SourceMap) -> Result<(), SpecError> {
    let Some(bomb) = &map.alias_bomb else {
        return Ok(());
    };
    let (message, help) = if bomb.by_alias {
        (
            format!(
                "aliases expand this document to more than {MAX_EXPANDED_NODES} nodes (an alias bomb, \"billion laughs\")"
            ),
            "use each anchor a few times; a .forge.yml needs no more",
        )
    } else {
        (
            format!("the document has more than {MAX_EXPANDED_NODES} nodes"),
            "a .forge.yml describes a build; keep data in other files",
        )
    };
    Err(invalid(
        label,
        Diagnostic {
            line: bomb.at.line,
            column: bomb.at.column,
            path: String::new(),
            message,
            help: Some(help.to_string()),
        },
    ))
}

/// Refused before libyaml sees it: libyaml takes quadratic time on deep
/// nesting.
fn refuse_deep_nesting(
    label: &str,
    map: &SourceMap,
    syntax: Option<&SyntaxError>,
) -> Result<(), SpecError> {
    let Some(at) = map.too_deep.or(syntax
        .filter(|s| s.is_flow_nesting_overflow())
        .map(|s| s.at))
    else {
        return Ok(());
    };
    Err(SpecError::Yaml {
        path: label.to_string(),
        line: at.line,
        column: at.column,
        message: "invalid YAML: the document is nested too deeply".to_string(),
        help: Some("a .forge.yml needs only a few levels of nesting".to_string()),
    })
}

fn libyaml_error(label: &str, text: &str, err: &serde_yaml::Error) -> SpecError {
    let (line, column) = err
        .location()
        .map_or((0, 0), |location| (location.line(), location.column()));
    let message = err.to_string();
    let help = if message.contains("more than one document") {
        if let Some(at) = second_document(text) {
            return SpecError::Yaml {
                path: label.to_string(),
                line: at,
                column: 1,
                message:
                    "invalid YAML: a second document starts here; a .forge.yml is one document"
                        .to_string(),
                help: Some(
                    "remove this `---` line and what follows, or merge it into the first document"
                        .to_string(),
                ),
            };
        }
        "keep a single YAML document: remove the extra `---` lines".to_string()
    } else {
        syntax_help(text, line)
    };
    SpecError::Yaml {
        path: label.to_string(),
        line,
        column,
        message: format!("invalid YAML: {message}"),
        help: Some(help),
    }
}

/// The line of the `---` that starts a second document, if any.
fn second_document(text: &str) -> Option<usize> {
    let mut content = false;
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("---") && content {
            return Some(n + 1);
        }
        let trimmed = line.trim();
        if !trimmed.is_empty()
            && !trimmed.starts_with('#')
            && !line.starts_with("---")
            && !line.starts_with('%')
        {
            content = true;
        }
    }
    None
}

fn syntax_help(text: &str, line: usize) -> String {
    let near = |l: usize| {
        text.lines()
            .nth(l.wrapping_sub(1))
            .is_some_and(|s| s.contains('\t'))
    };
    if line > 0 && (near(line) || near(line - 1)) {
        "YAML does not allow tabs for indentation; indent with spaces".to_string()
    } else {
        "check the indentation, quotes and brackets around this position".to_string()
    }
}

/// A `Value` whose mappings keep the last of duplicate keys instead of
/// failing, so that a duplicate is reported with the file's other problems
/// (the source map, which also records the last occurrence, finds them).
struct LastKeyWins(Value);

impl<'de> Deserialize<'de> for LastKeyWins {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(LastKeyWinsVisitor)
            .map(LastKeyWins)
    }
}

struct LastKeyWinsVisitor;

impl<'de> de::Visitor<'de> for LastKeyWinsVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Number(i.into()))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
        Ok(Value::Number(u.into()))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(Value::Number(f.into()))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        LastKeyWins::deserialize(deserializer).map(|v| v.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let mut sequence = Vec::with_capacity(items.size_hint().unwrap_or(0).min(1024));
        while let Some(LastKeyWins(item)) = items.next_element()? {
            sequence.push(item);
        }
        Ok(Value::Sequence(sequence))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Value, A::Error> {
        let mut mapping = Mapping::new();
        while let Some((LastKeyWins(key), LastKeyWins(value))) = entries.next_entry()? {
            mapping.insert(key, value);
        }
        Ok(Value::Mapping(mapping))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (tag, contents) = data.variant::<String>()?;
        if tag.is_empty() {
            return Err(de::Error::custom("empty YAML tag is not allowed"));
        }
        let LastKeyWins(value) = contents.newtype_variant()?;
        Ok(Value::Tagged(Box::new(TaggedValue {
            tag: Tag::new(tag),
            value,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_keep_the_last_value_and_are_mapped() {
        let doc = parse("f.yml", "a: 1\nb: {c: 1, c: 2}\na: 3\n").expect("parsed");
        assert_eq!(doc.value["a"], Value::from(3));
        assert_eq!(doc.value["b"]["c"], Value::from(2));
        assert_eq!(doc.map.duplicates.len(), 2);
    }

    #[test]
    fn the_same_values_as_serde_yaml_when_keys_are_unique() {
        let text = "a: [1, -2, 3.5, true, ~, \"x\", !t {k: v}]\n<<: {m: 1}\n";
        let mine: LastKeyWins = serde_yaml::from_str(text).expect("lenient");
        let theirs: Value = serde_yaml::from_str(text).expect("serde_yaml");
        assert_eq!(mine.0, theirs);
    }
}
