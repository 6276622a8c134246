//! The `.forge.yml` model and validation (being written).
use std::path::Path;

mod model;
pub use model::*;

impl Spec {
    pub fn summary(&self) -> String {
        String::new()
    }
}
pub fn load(_path: &Path) -> Result<Spec, String> {
    Ok(Spec::default())
}
pub fn json_schema() -> &'static str {
    "{}"
}

/// Temporary: replaced by the real splitter from the spec work.
impl Run {
    pub fn words_without_shell(&self) -> Result<Vec<String>, String> {
        match self {
            Run::Exec(argv) => Ok(argv.clone()),
            Run::Shell(text) => Ok(text.split_whitespace().map(str::to_string).collect()),
        }
    }
}
