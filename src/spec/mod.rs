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

/// Placeholder until the `spec` branch lands (launcher branch only):
/// reads `image` and `environment`.
#[derive(Debug)]
pub struct SpecError(pub String);
impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
pub fn parse(label: &str, bytes: &[u8]) -> Result<Spec, SpecError> {
    let v: serde_yaml::Value =
        serde_yaml::from_slice(bytes).map_err(|e| SpecError(format!("{label}: {e}")))?;
    let mut spec = Spec {
        image: v.get("image").and_then(|i| i.as_str()).map(str::to_string),
        ..Spec::default()
    };
    if v.get("execute").is_none() {
        return Err(SpecError(format!("{label}: no execute")));
    }
    if let Some(env) = v.get("environment").and_then(|e| e.as_mapping()) {
        for (k, val) in env {
            if let (Some(k), Some(val)) = (k.as_str(), val.as_str()) {
                spec.environment.insert(k.into(), val.into());
            }
        }
    }
    Ok(spec)
}
