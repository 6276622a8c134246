//! Semantic validation: turns the parsed YAML `Value` into the typed
//! [`Spec`], checking every rule of the language and collecting ALL
//! problems (not only the first) as [`Diagnostic`]s positioned through the
//! [`SourceMap`]: unknown and duplicate keys point at the key, bad values at
//! the value.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use crate::facts::{parse_duration, ActionName};

use super::model::{
    Artifacts, Command, PortMapping, Run, Service, Spec, When, DEFAULT_SERVICE_WAIT,
};
use super::shell_words::is_env_name;
use super::source_map::{Position, Segment, SourceMap, Target, YamlPath};
use super::yaml::{self, Document};
use super::{Diagnostic, SpecError};

/// Top-level keys of the language.
pub const TOP_KEYS: &[&str] = &[
    "image",
    "environment",
    "secrets",
    "ports",
    "setup",
    "execute",
    "actions",
    "artifacts",
    "timeout",
    "services",
];

/// Keys of a service under `services:`.
pub const SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "ports",
    "wait",
];

/// Keys of a command in mapping form.
pub const COMMAND_KEYS: &[&str] = &["run", "name", "timeout", "env", "workdir", "allow_failure"];

/// Keys of `artifacts:` in mapping form.
pub const ARTIFACT_KEYS: &[&str] = &["paths", "exclude", "when"];

const WHEN_VALUES: &[&str] = &["on_success", "on_failure", "always"];

/// Validate the UTF-8 `text` of a `.forge.yml` labelled `label`.
pub(crate) fn validate(label: &str, text: &str) -> Result<Spec, SpecError> {
    let Document { value, map } = yaml::parse(label, text)?;
    let mut validator = Validator {
        map: &map,
        diagnostics: duplicate_keys(&map),
    };
    let spec = validator.spec(&value);
    let mut diagnostics = validator.diagnostics;
    if diagnostics.is_empty() {
        Ok(spec)
    } else {
        diagnostics.sort_by_key(|d| (d.line, d.column));
        Err(SpecError::Invalid {
            path: label.to_string(),
            diagnostics,
        })
    }
}

fn duplicate_keys(map: &SourceMap) -> Vec<Diagnostic> {
    map.duplicates
        .iter()
        .map(|dup| Diagnostic {
            line: dup.at.line,
            column: dup.at.column,
            path: dup.path.to_string(),
            message: format!(
                "duplicate key `{}` (first defined at line {})",
                dup.key, dup.first.line
            ),
            help: Some("remove one of them; a key may appear only once in a mapping".to_string()),
        })
        .collect()
}

/// The closest of `valid` to `name`, when it is close enough to be a typo.
pub(crate) fn did_you_mean<'a>(name: &str, valid: &[&'a str]) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    valid
        .iter()
        .map(|candidate| (strsim::damerau_levenshtein(&lower, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Parse a duration: a bare number of seconds or humantime text.
pub(crate) fn duration_value(value: &Value) -> Result<Duration, String> {
    let duration = match value {
        Value::Number(number) => match number.as_u64() {
            Some(seconds) => Duration::from_secs(seconds),
            None => {
                return Err(format!(
                    "`{number}` is not a whole, positive number of seconds"
                ))
            }
        },
        Value::String(text) => parse_duration(text).map_err(|err| err.to_string())?,
        other => {
            return Err(format!(
                "a duration must be a string or a number, not {}",
                kind(other)
            ))
        }
    };
    if duration.is_zero() {
        return Err("the duration is zero".to_string());
    }
    Ok(duration)
}

/// What kind of YAML value this is, for messages.
fn kind(value: &Value) -> String {
    match value {
        Value::Null => "an empty value".to_string(),
        Value::Bool(_) => "a boolean".to_string(),
        Value::Number(_) => "a number".to_string(),
        Value::String(_) => "a string".to_string(),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(tagged) => format!("a value tagged `{}`", tagged.tag),
    }
}

/// A mapping key as text (numbers and booleans as written).
fn key_text(key: &Value) -> Option<String> {
    match key {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

struct Validator<'a> {
    map: &'a SourceMap,
    diagnostics: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn error(&mut self, path: &YamlPath, target: Target, message: String, help: Option<String>) {
        let at = self
            .map
            .position(path, target)
            .unwrap_or(Position { line: 1, column: 1 });
        self.diagnostics.push(Diagnostic {
            line: at.line,
            column: at.column,
            path: path.to_string(),
            message,
            help,
        });
    }

    /// "WHAT must be EXPECTED, not (what `found` is)", at the value.
    fn wrong_kind(
        &mut self,
        path: &YamlPath,
        what: &str,
        expected: &str,
        found: &Value,
        help: &str,
    ) {
        self.error(
            path,
            Target::Value,
            format!("{what} must be {expected}, not {}", kind(found)),
            Some(help.to_string()),
        );
    }

    fn line(&self, path: &YamlPath) -> usize {
        self.map
            .position(path, Target::Value)
            .map_or(1, |at| at.line)
    }

    /// The entries of a mapping with text keys; reports other keys.
    fn entries<'v>(&mut self, path: &YamlPath, mapping: &'v Mapping) -> Vec<(String, &'v Value)> {
        let mut entries = Vec::new();
        for (key, value) in mapping {
            match key_text(key) {
                Some(name) => entries.push((name, value)),
                None => self.error(
                    path,
                    Target::Value,
                    format!("a key here is {}, but keys must be plain names", kind(key)),
                    Some("write the key as a plain word".to_string()),
                ),
            }
        }
        entries
    }

    fn unknown_key(&mut self, path: &YamlPath, name: &str, valid: &[&str], context: &str) {
        let help = match did_you_mean(name, valid) {
            Some(suggestion) => format!("did you mean `{suggestion}`?"),
            None => {
                let list: Vec<String> = valid.iter().map(|k| format!("`{k}`")).collect();
                format!("valid keys are {}", list.join(", "))
            }
        };
        let help = if context == "the file" {
            format!("{help} (keys starting with `x-` are ignored, e.g. for YAML anchors)")
        } else {
            help
        };
        self.error(
            &path.key(name),
            Target::Key,
            format!("unknown key `{name}` in {context}"),
            Some(help),
        );
    }

    fn spec(&mut self, root: &Value) -> Spec {
        let mut spec = Spec::default();
        let path = YamlPath::root();
        let Value::Mapping(mapping) = root else {
            self.wrong_kind(
                &path,
                "the file",
                "a mapping of keys such as `image:` and `execute:`",
                root,
                "start with `execute:` and a list of commands",
            );
            return spec;
        };
        for (name, value) in self.entries(&path, mapping) {
            let here = path.key(&name);
            match name.as_str() {
                "image" => spec.image = self.image(&here, value),
                "environment" => spec.environment = self.env(&here, value),
                "secrets" => spec.secrets = self.secrets(&here, value),
                "ports" => spec.ports = self.ports(&here, value),
                "setup" => spec.setup = self.commands(&here, value, true),
                "execute" => spec.execute = Some(self.commands(&here, value, false)),
                "actions" => spec.actions = self.actions(&here, value),
                "artifacts" => spec.artifacts = self.artifacts(&here, value),
                "timeout" => spec.timeout = self.duration(&here, value),
                "services" => spec.services = self.services(&here, value),
                other if other.starts_with("x-") => {}
                other => self.unknown_key(&path, other, TOP_KEYS, "the file"),
            }
        }
        self.ports_shared_with_services(&path, &spec);
        let has = |key: &str| mapping.contains_key(key);
        // A misspelt `execute:` is reported as such; saying there is
        // nothing to run would only repeat it.
        let misspelt = mapping.keys().filter_map(Value::as_str).any(|name| {
            !TOP_KEYS.contains(&name)
                && matches!(did_you_mean(name, TOP_KEYS), Some("execute" | "actions"))
        });
        if !has("execute") && !has("actions") && !misspelt {
            self.error(
                &path,
                Target::Value,
                "the file has neither `execute:` nor `actions:`, so there is nothing to run"
                    .to_string(),
                Some(
                    "add `execute:` with the build's commands, e.g. `execute: [\"make test\"]`"
                        .to_string(),
                ),
            );
        }
        spec
    }

    fn services(&mut self, path: &YamlPath, value: &Value) -> Vec<Service> {
        let mut services = Vec::new();
        let Value::Mapping(mapping) = value else {
            self.wrong_kind(
                path,
                "`services`",
                "a mapping of service names to services",
                value,
                "write e.g. `services: {db: {image: \"postgres:16\", ports: [5432]}}`",
            );
            return services;
        };
        // Port -> the service that waits on it, for the clash check.
        let mut taken: BTreeMap<u16, String> = BTreeMap::new();
        for (name, value) in self.entries(path, mapping) {
            let here = path.key(&name);
            if !Service::is_valid_name(&name) {
                self.error(
                    &here,
                    Target::Key,
                    format!("`{name}` is not a valid service name"),
                    Some("use lower-case letters, digits and `-`, starting with a letter or digit (at most 63), e.g. `db`".to_string()),
                );
            }
            // Services with problems are kept too: their ports are still
            // checked, and any problem makes the whole file refused.
            if let Some(service) = self.service(&here, &name, value) {
                for (index, port) in service.ports.iter().enumerate() {
                    if let Some(other) = taken.get(port) {
                        self.error(
                            &here.key("ports").index(index),
                            Target::Value,
                            format!("port {port} is already the port of service `{other}`"),
                            Some(
                                "services share the build's network: give each its own port"
                                    .to_string(),
                            ),
                        );
                    } else {
                        taken.insert(*port, name.clone());
                    }
                }
                services.push(service);
            }
        }
        services
    }

    fn service(&mut self, path: &YamlPath, name: &str, value: &Value) -> Option<Service> {
        let Value::Mapping(mapping) = value else {
            self.wrong_kind(
                path,
                &format!("service `{name}`"),
                "a mapping with at least `image:`",
                value,
                "write e.g. `db: {image: \"postgres:16\", ports: [5432]}`",
            );
            return None;
        };
        let mut service = Service {
            name: name.to_string(),
            image: String::new(),
            command: None,
            entrypoint: None,
            environment: BTreeMap::new(),
            ports: Vec::new(),
            wait: DEFAULT_SERVICE_WAIT,
            line: self.map.position(path, Target::Key).map_or(1, |at| at.line),
        };
        let mut image = None;
        for (key, value) in self.entries(path, mapping) {
            let here = path.key(&key);
            match key.as_str() {
                "image" => image = self.image(&here, value),
                "command" => service.command = self.run(&here, value),
                "entrypoint" => service.entrypoint = self.run(&here, value),
                "environment" => service.environment = self.env(&here, value),
                "ports" => service.ports = self.service_ports(&here, value),
                "wait" => {
                    service.wait = self.duration(&here, value).unwrap_or(DEFAULT_SERVICE_WAIT)
                }
                other => self.unknown_key(path, other, SERVICE_KEYS, "a service"),
            }
        }
        match image {
            Some(image) => service.image = image,
            None if !mapping.contains_key("image") => self.error(
                path,
                Target::Key,
                format!("service `{name}` has no `image`"),
                Some(format!("add e.g. `image: postgres:16` under `{name}:`")),
            ),
            None => {}
        }
        Some(service)
    }

    fn service_ports(&mut self, path: &YamlPath, value: &Value) -> Vec<u16> {
        let Value::Sequence(items) = value else {
            self.wrong_kind(
                path,
                "a service's `ports`",
                "a list of container ports",
                value,
                "write e.g. `ports: [5432]`",
            );
            return Vec::new();
        };
        let mut ports: Vec<u16> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let here = path.index(index);
            if let Some(port) = self.port(&here, Target::Value, item) {
                if ports.contains(&port) {
                    self.error(
                        &here,
                        Target::Value,
                        format!("port {port} is listed twice"),
                        Some("list each port once".to_string()),
                    );
                } else {
                    ports.push(port);
                }
            }
        }
        ports
    }

    /// A service port that the build also publishes would be bound twice
    /// in the one network namespace they share.
    fn ports_shared_with_services(&mut self, root: &YamlPath, spec: &Spec) {
        for service in &spec.services {
            for (index, port) in service.ports.iter().enumerate() {
                if spec.ports.iter().any(|p| p.target == *port) {
                    self.error(
                        &root.key("services").key(&service.name).key("ports").index(index),
                        Target::Value,
                        format!(
                            "port {port} of service `{}` is also a port the build publishes (`ports:`)",
                            service.name
                        ),
                        Some("the build and its services share one network: use another port for one of them".to_string()),
                    );
                }
            }
        }
    }

    fn image(&mut self, path: &YamlPath, value: &Value) -> Option<String> {
        match value {
            Value::String(image) if !image.trim().is_empty() => Some(image.clone()),
            Value::String(_) => {
                self.error(
                    path,
                    Target::Value,
                    "`image` is empty".to_string(),
                    Some("name an image, e.g. `image: alpine:3`".to_string()),
                );
                None
            }
            other => {
                self.wrong_kind(
                    path,
                    "`image`",
                    "a string",
                    other,
                    "name an image, e.g. `image: alpine:3`",
                );
                None
            }
        }
    }

    fn env(&mut self, path: &YamlPath, value: &Value) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let Value::Mapping(mapping) = value else {
            self.wrong_kind(
                path,
                "environment variables",
                "a mapping of NAME: value",
                value,
                "write one `NAME: value` per line",
            );
            return env;
        };
        for (name, value) in self.entries(path, mapping) {
            let here = path.key(&name);
            let mut good = true;
            if !is_env_name(&name) {
                good = false;
                self.error(
                    &here,
                    Target::Key,
                    format!("`{name}` is not a valid environment variable name"),
                    Some(
                        "use letters, digits and `_`, not starting with a digit, e.g. `MY_VAR`"
                            .to_string(),
                    ),
                );
            } else if let Some(rest) = name.strip_prefix("FORGE_") {
                good = false;
                let suggestion = if rest.is_empty() { "MY_VAR" } else { rest };
                self.error(
                    &here,
                    Target::Key,
                    format!("`{name}` is reserved: `FORGE_*` variables carry the build's facts (repository, commit, action, ...)"),
                    Some(format!("rename it, e.g. `{suggestion}`")),
                );
            }
            // Numbers and booleans keep the text as written: `3.10` stays
            // `3.10`, `0x10` stays `0x10`, `yes` stays `yes`.
            let as_written = || self.map.plain_text(&here).map(str::to_string);
            let text = match value {
                Value::String(text) => Some(text.clone()),
                Value::Number(number) => Some(as_written().unwrap_or_else(|| number.to_string())),
                Value::Bool(flag) => Some(as_written().unwrap_or_else(|| flag.to_string())),
                Value::Null => {
                    self.error(
                        &here,
                        Target::Value,
                        format!("`{name}` has no value"),
                        Some(format!("write an empty value as `{name}: \"\"`")),
                    );
                    None
                }
                other => {
                    self.wrong_kind(
                        &here,
                        &format!("the value of `{name}`"),
                        "a string, number or boolean",
                        other,
                        "quote the value to pass it as text",
                    );
                    None
                }
            };
            if let (true, Some(text)) = (good, text) {
                env.insert(name, text);
            }
        }
        env
    }

    fn secrets(&mut self, path: &YamlPath, value: &Value) -> Vec<String> {
        let mut secrets: Vec<String> = Vec::new();
        let Value::Sequence(items) = value else {
            self.wrong_kind(
                path,
                "`secrets`",
                "a list of environment variable names",
                value,
                "write e.g. `secrets: [API_TOKEN]`",
            );
            return secrets;
        };
        for (index, item) in items.iter().enumerate() {
            let here = path.index(index);
            match item {
                Value::String(name) if is_env_name(name) => {
                    if secrets.contains(name) {
                        self.error(
                            &here,
                            Target::Value,
                            format!("secret `{name}` is listed twice"),
                            Some("remove the repetition".to_string()),
                        );
                    } else {
                        secrets.push(name.clone());
                    }
                }
                Value::String(name) => self.error(
                    &here,
                    Target::Value,
                    format!("`{name}` is not a valid environment variable name"),
                    Some(
                        "use letters, digits and `_`, not starting with a digit, e.g. `API_TOKEN`"
                            .to_string(),
                    ),
                ),
                other => self.wrong_kind(
                    &here,
                    "a secret",
                    "an environment variable name",
                    other,
                    "write the variable's name, e.g. `API_TOKEN`",
                ),
            }
        }
        secrets
    }

    fn port(&mut self, path: &YamlPath, target: Target, value: &Value) -> Option<u16> {
        let number = match value {
            Value::Number(number) => number.as_i64(),
            Value::String(text) => text.trim().parse::<i64>().ok(),
            _ => None,
        };
        match number {
            Some(port) if (1..=65535).contains(&port) => u16::try_from(port).ok(),
            Some(port) => {
                self.error(
                    path,
                    target,
                    format!("port {port} is out of range"),
                    Some("ports are numbers from 1 to 65535".to_string()),
                );
                None
            }
            None => {
                let shown = match value {
                    Value::String(text) => format!("`{text}`"),
                    Value::Number(number) => format!("`{number}`"),
                    other => kind(other),
                };
                self.error(
                    path,
                    target,
                    format!("{shown} is not a port number"),
                    Some("map a published port to a container port, e.g. `8080: 80`".to_string()),
                );
                None
            }
        }
    }

    fn ports(&mut self, path: &YamlPath, value: &Value) -> Vec<PortMapping> {
        let mut ports = Vec::new();
        let Value::Mapping(mapping) = value else {
            self.wrong_kind(
                path,
                "`ports`",
                "a mapping of published: target ports",
                value,
                "write e.g. `ports: {8080: 80}`",
            );
            return ports;
        };
        for (key, target) in mapping {
            let name = key_text(key).unwrap_or_else(|| "?".to_string());
            let here = path.key(&name);
            let published = self.port(&here, Target::Key, key);
            let target = self.port(&here, Target::Value, target);
            if let (Some(published), Some(target)) = (published, target) {
                ports.push(PortMapping { published, target });
            }
        }
        ports
    }

    fn actions(&mut self, path: &YamlPath, value: &Value) -> BTreeMap<String, Vec<Command>> {
        let mut actions = BTreeMap::new();
        let Value::Mapping(mapping) = value else {
            self.wrong_kind(
                path,
                "`actions`",
                "a mapping of action names to lists of commands",
                value,
                "write e.g. `actions: {lint: [\"make lint\"]}`",
            );
            return actions;
        };
        for (name, commands) in self.entries(path, mapping) {
            let here = path.key(&name);
            if !ActionName::is_valid(&name) {
                self.error(
                    &here,
                    Target::Key,
                    format!("`{name}` is not a valid action name"),
                    Some("start with a letter or digit and use only letters, digits, `_`, `.` and `-`".to_string()),
                );
            }
            let commands = self.commands(&here, commands, false);
            actions.insert(name, commands);
        }
        actions
    }

    fn commands(&mut self, path: &YamlPath, value: &Value, may_be_empty: bool) -> Vec<Command> {
        let key = path.to_string();
        let items = match value {
            Value::Sequence(items) => items,
            Value::String(text) => {
                self.error(
                    path,
                    Target::Value,
                    format!("`{key}` must be a list of commands, not a string"),
                    Some(format!(
                        "write it as a list: `{key}: [{text:?}]`, or `- {text}` on the next line"
                    )),
                );
                return Vec::new();
            }
            other => {
                self.wrong_kind(
                    path,
                    &format!("`{key}`"),
                    "a list of commands",
                    other,
                    "write one `- command` per line",
                );
                return Vec::new();
            }
        };
        if items.is_empty() && !may_be_empty {
            self.error(
                path,
                Target::Value,
                format!("`{key}` has no commands"),
                Some("add at least one command, or remove the key".to_string()),
            );
        }
        items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| self.command(&path.index(index), item))
            .collect()
    }

    fn command(&mut self, path: &YamlPath, value: &Value) -> Option<Command> {
        let line = self.line(path);
        let simple = |run| Command {
            run,
            name: None,
            timeout: None,
            env: BTreeMap::new(),
            workdir: None,
            allow_failure: false,
            line,
        };
        match value {
            Value::String(_) | Value::Sequence(_) => self.run(path, value).map(simple),
            Value::Mapping(mapping) => self.command_mapping(path, mapping, line),
            other => {
                self.wrong_kind(
                    path,
                    "a command",
                    "a string, a list of strings (exec form) or a mapping with `run:`",
                    other,
                    "quote the command to make it a string, e.g. `- \"make test\"`",
                );
                None
            }
        }
    }

    fn run(&mut self, path: &YamlPath, value: &Value) -> Option<Run> {
        match value {
            Value::String(text) if text.trim().is_empty() => {
                self.error(
                    path,
                    Target::Value,
                    "the command is empty".to_string(),
                    Some("write the command to run, e.g. `make test`".to_string()),
                );
                None
            }
            Value::String(text) => Some(Run::Shell(text.clone())),
            Value::Sequence(items) if items.is_empty() => {
                self.error(
                    path,
                    Target::Value,
                    "the exec-form command is an empty list".to_string(),
                    Some(
                        "give the program and its arguments, e.g. `[\"make\", \"test\"]`"
                            .to_string(),
                    ),
                );
                None
            }
            Value::Sequence(items) => {
                let mut argv = Vec::new();
                for (index, item) in items.iter().enumerate() {
                    match item {
                        Value::String(word) => argv.push(word.clone()),
                        other => {
                            let shown = match other {
                                Value::Number(n) => format!("`{n}` is a number"),
                                Value::Bool(b) => format!("`{b}` is a boolean"),
                                other => format!("this is {}", kind(other)),
                            };
                            self.error(
                                &path.index(index),
                                Target::Value,
                                format!("exec-form arguments must be strings; {shown}"),
                                Some("quote it, e.g. `\"5\"`".to_string()),
                            );
                        }
                    }
                }
                if argv
                    .first()
                    .is_some_and(|program| program.trim().is_empty())
                {
                    self.error(
                        &path.index(0),
                        Target::Value,
                        "the program name is empty".to_string(),
                        Some("the first element is the program to run, e.g. `make`".to_string()),
                    );
                    return None;
                }
                (argv.len() == items.len()).then_some(Run::Exec(argv))
            }
            other => {
                self.wrong_kind(
                    path,
                    "`run`",
                    "a string or a list of strings",
                    other,
                    "write `run: make test` or `run: [\"make\", \"test\"]`",
                );
                None
            }
        }
    }

    fn command_mapping(
        &mut self,
        path: &YamlPath,
        mapping: &Mapping,
        line: usize,
    ) -> Option<Command> {
        let mut run = None;
        let mut has_run = false;
        let mut command = Command {
            run: Run::Exec(Vec::new()),
            name: None,
            timeout: None,
            env: BTreeMap::new(),
            workdir: None,
            allow_failure: false,
            line,
        };
        for (name, value) in self.entries(path, mapping) {
            let here = path.key(&name);
            match name.as_str() {
                "run" => {
                    has_run = true;
                    run = self.run(&here, value);
                }
                "name" => match value {
                    Value::String(text) if !text.trim().is_empty() => {
                        command.name = Some(text.clone())
                    }
                    other => self.error(
                        &here,
                        Target::Value,
                        format!(
                            "`name` must be a non-empty string, not {}",
                            if other.is_string() {
                                "an empty one".to_string()
                            } else {
                                kind(other)
                            }
                        ),
                        Some("name the step for logs, e.g. `name: unit tests`".to_string()),
                    ),
                },
                "timeout" => command.timeout = self.duration(&here, value),
                "env" => command.env = self.env(&here, value),
                "workdir" => command.workdir = self.workdir(&here, value),
                "allow_failure" => match value {
                    Value::Bool(flag) => command.allow_failure = *flag,
                    other => self.wrong_kind(
                        &here,
                        "`allow_failure`",
                        "`true` or `false`",
                        other,
                        "write `allow_failure: true`",
                    ),
                },
                other => self.unknown_key(path, other, COMMAND_KEYS, "a command"),
            }
        }
        if !has_run {
            self.error(
                path,
                Target::Value,
                "the command has no `run:`".to_string(),
                Some("add what to run, e.g. `run: make test`".to_string()),
            );
        }
        command.run = run?;
        Some(command)
    }

    fn workdir(&mut self, path: &YamlPath, value: &Value) -> Option<String> {
        let Value::String(dir) = value else {
            self.wrong_kind(
                path,
                "`workdir`",
                "a string",
                value,
                "give a directory relative to the workspace, e.g. `workdir: web`",
            );
            return None;
        };
        let problem = if dir.trim().is_empty() {
            Some("`workdir` is empty".to_string())
        } else if is_absolute(dir) {
            Some(format!("`{dir}` is an absolute path"))
        } else if escapes(dir) {
            Some(format!("`{dir}` leaves the workspace"))
        } else {
            None
        };
        match problem {
            Some(message) => {
                self.error(
                    path,
                    Target::Value,
                    message,
                    Some("`workdir` is relative to the workspace and must stay inside it, e.g. `workdir: web`".to_string()),
                );
                None
            }
            None => Some(dir.clone()),
        }
    }

    fn duration(&mut self, path: &YamlPath, value: &Value) -> Option<Duration> {
        match duration_value(value) {
            Ok(duration) => Some(duration),
            Err(message) => {
                let help = if message == "the duration is zero" {
                    "give a positive duration, or remove the key for no limit"
                } else {
                    "write a duration like `90s`, `30m` or `1h30m` (a bare number means seconds)"
                };
                let key = match path.0.last() {
                    Some(Segment::Key(key)) => key.clone(),
                    _ => "timeout".to_string(),
                };
                self.error(
                    path,
                    Target::Value,
                    format!("bad `{key}`: {message}"),
                    Some(help.to_string()),
                );
                None
            }
        }
    }

    fn artifacts(&mut self, path: &YamlPath, value: &Value) -> Artifacts {
        let mut artifacts = Artifacts::default();
        match value {
            Value::Sequence(_) => artifacts.paths = self.globs(path, value),
            Value::Mapping(mapping) => {
                let mut has_paths = false;
                for (name, value) in self.entries(path, mapping) {
                    let here = path.key(&name);
                    match name.as_str() {
                        "paths" => {
                            has_paths = true;
                            artifacts.paths = self.globs(&here, value);
                        }
                        "exclude" => artifacts.exclude = self.globs(&here, value),
                        "when" => {
                            if let Some(when) = self.when(&here, value) {
                                artifacts.when = when;
                            }
                        }
                        other => self.unknown_key(path, other, ARTIFACT_KEYS, "`artifacts`"),
                    }
                }
                if !has_paths {
                    self.error(
                        path,
                        Target::Value,
                        "`artifacts` has no `paths:`".to_string(),
                        Some("list what to collect, e.g. `paths: [\"target/*.xml\"]`".to_string()),
                    );
                }
            }
            other => self.wrong_kind(
                path,
                "`artifacts`",
                "a list of globs or a mapping with `paths:`",
                other,
                "write e.g. `artifacts: [\"dist/**\"]`",
            ),
        }
        artifacts
    }

    fn when(&mut self, path: &YamlPath, value: &Value) -> Option<When> {
        match value.as_str() {
            Some("on_success") => Some(When::OnSuccess),
            Some("on_failure") => Some(When::OnFailure),
            Some("always") => Some(When::Always),
            _ => {
                let shown = match value {
                    Value::String(text) => format!("`{text}`"),
                    other => kind(other),
                };
                let help = match value
                    .as_str()
                    .and_then(|text| did_you_mean(text, WHEN_VALUES))
                {
                    Some(suggestion) => format!("did you mean `{suggestion}`?"),
                    None => "use `on_success`, `on_failure` or `always`".to_string(),
                };
                self.error(
                    path,
                    Target::Value,
                    format!("{shown} is not a valid `when`"),
                    Some(help),
                );
                None
            }
        }
    }

    fn globs(&mut self, path: &YamlPath, value: &Value) -> Vec<String> {
        let Value::Sequence(items) = value else {
            self.error(
                path,
                Target::Value,
                format!("expected a list of globs, not {}", kind(value)),
                Some("write e.g. `[\"dist/**\", \"*.log\"]`".to_string()),
            );
            return Vec::new();
        };
        let mut globs = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let here = path.index(index);
            let Value::String(glob) = item else {
                self.wrong_kind(
                    &here,
                    "a glob",
                    "a string",
                    item,
                    "quote it, e.g. `\"dist/**\"`",
                );
                continue;
            };
            let help = "artifact paths are globs relative to the workspace, e.g. `target/*.xml`";
            if glob.trim().is_empty() {
                self.error(
                    &here,
                    Target::Value,
                    "the glob is empty".to_string(),
                    Some(help.to_string()),
                );
            } else if is_absolute(glob) {
                self.error(
                    &here,
                    Target::Value,
                    format!("`{glob}` is an absolute path"),
                    Some(help.to_string()),
                );
            } else if glob.split(['/', '\\']).any(|part| part == "..") {
                self.error(
                    &here,
                    Target::Value,
                    format!("`{glob}` uses `..`, which leaves the workspace"),
                    Some(help.to_string()),
                );
            } else if let Err(err) = crate::artifacts::pattern::check(glob) {
                self.error(
                    &here,
                    Target::Value,
                    format!("`{glob}` is not a valid glob: {err}"),
                    Some("globs use `*`, `**`, `?`, `[abc]` and `{a,b}`; match a literal `[` with `[[]`".to_string()),
                );
            } else {
                globs.push(glob.clone());
            }
        }
        globs
    }
}

fn is_absolute(path: &str) -> bool {
    let bytes = path.as_bytes();
    path.starts_with('/')
        || path.starts_with('\\')
        || (bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':')
}

/// Whether a relative path climbs above its base with `..`.
fn escapes(path: &str) -> bool {
    let mut depth: usize = 0;
    for part in path.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(up) => depth = up,
                None => return true,
            },
            _ => depth += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_finds_typos() {
        assert_eq!(did_you_mean("exectue", TOP_KEYS), Some("execute"));
        assert_eq!(did_you_mean("enviroment", TOP_KEYS), Some("environment"));
        assert_eq!(did_you_mean("Image", TOP_KEYS), Some("image"));
        assert_eq!(did_you_mean("artifact", TOP_KEYS), Some("artifacts"));
        assert_eq!(did_you_mean("workdri", COMMAND_KEYS), Some("workdir"));
        assert_eq!(did_you_mean("on-success", WHEN_VALUES), Some("on_success"));
        assert_eq!(did_you_mean("banana", TOP_KEYS), None);
        assert_eq!(did_you_mean("x", COMMAND_KEYS), None);
    }

    #[test]
    fn durations() {
        let d = |v: Value| duration_value(&v);
        assert_eq!(d(Value::from(90)), Ok(Duration::from_secs(90)));
        assert_eq!(d(Value::from("90")), Ok(Duration::from_secs(90)));
        assert_eq!(d(Value::from("90s")), Ok(Duration::from_secs(90)));
        assert_eq!(d(Value::from("30m")), Ok(Duration::from_secs(1800)));
        assert_eq!(d(Value::from("1h30m")), Ok(Duration::from_secs(5400)));
        assert_eq!(d(Value::from("1h 30m")), Ok(Duration::from_secs(5400)));
        assert_eq!(d(Value::from(0)), Err("the duration is zero".to_string()));
        assert_eq!(
            d(Value::from("0s")),
            Err("the duration is zero".to_string())
        );
        assert!(d(Value::from(-5)).is_err());
        assert!(d(Value::from(1.5)).is_err());
        assert!(d(Value::from("soon")).is_err());
        assert!(d(Value::from("10 parsecs")).is_err());
        assert!(d(Value::Null).is_err());
    }

    #[test]
    fn escaping_paths() {
        assert!(!escapes("a/b"));
        assert!(!escapes("a/../b"));
        assert!(!escapes("./a"));
        assert!(escapes(".."));
        assert!(escapes("a/../../b"));
        assert!(is_absolute("/x"));
        assert!(is_absolute("C:\\x"));
        assert!(!is_absolute("x/y"));
    }

    #[test]
    fn action_names() {
        assert!(ActionName::is_valid("lint"));
        assert!(ActionName::is_valid("1.x-y_z"));
        assert!(!ActionName::is_valid("-x"));
        assert!(!ActionName::is_valid("a b"));
        assert!(!ActionName::is_valid(""));
    }
}
