//! Typed model of a validated `.forge.yml`. Everything here has passed
//! validation: names are valid, paths stay inside the workspace, durations
//! are parsed.

use std::collections::BTreeMap;
use std::time::Duration;

/// A validated `.forge.yml`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Spec {
    /// Build image (used by the launcher; informational inside the container).
    pub image: Option<String>,
    /// Environment for every command, in file order.
    pub environment: BTreeMap<String, String>,
    /// Names of environment variables whose values are masked in all output.
    pub secrets: Vec<String>,
    /// Published ports for the launcher.
    pub ports: Vec<PortMapping>,
    /// Commands run before the action.
    pub setup: Vec<Command>,
    /// The default action's commands (`execute:`).
    pub execute: Option<Vec<Command>>,
    /// Named actions (`actions:`), picked by `FORGE_ACTION`.
    pub actions: BTreeMap<String, Vec<Command>>,
    /// What to collect after the build.
    pub artifacts: Artifacts,
    /// Whole-build time limit.
    pub timeout: Option<Duration>,
    /// Sidecar services (`services:`), in file order.
    pub services: Vec<Service>,
}

impl Spec {
    /// The commands of an action: `execute` is `execute:` unless `actions:`
    /// defines it explicitly; `None` when the spec lacks the action.
    pub fn action(&self, name: &str) -> Option<&[Command]> {
        if let Some(commands) = self.actions.get(name) {
            return Some(commands);
        }
        if name == "execute" {
            return self.execute.as_deref();
        }
        None
    }

    /// Every action name the spec can run, for error messages.
    pub fn action_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.actions.keys().map(String::as_str).collect();
        if self.execute.is_some() && !self.actions.contains_key("execute") {
            names.insert(0, "execute");
        }
        names
    }
}

/// How long forgexec waits for a service's ports when `wait:` is not given.
pub const DEFAULT_SERVICE_WAIT: Duration = Duration::from_secs(60);

/// A sidecar service: a container beside the build, sharing its network
/// namespace, reached at `127.0.0.1:PORT` or by its name.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// `[a-z0-9][a-z0-9-]*`: also its host name inside the build.
    pub name: String,
    pub image: String,
    /// Replaces the image's command.
    pub command: Option<Run>,
    /// Replaces the image's entrypoint.
    pub entrypoint: Option<Run>,
    pub environment: BTreeMap<String, String>,
    /// Container ports forgexec waits for before `setup`.
    pub ports: Vec<u16>,
    /// How long to wait for the ports.
    pub wait: Duration,
    /// 1-based line of the service's name in the file.
    pub line: usize,
}

impl Service {
    /// Whether `name` may name a service (and a host).
    pub fn is_valid_name(name: &str) -> bool {
        let mut bytes = name.bytes();
        matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
            && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
            && name.len() <= 63
    }
}

/// A published port (`ports: {8080: 80}`), as Swarm's EndpointSpec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMapping {
    pub published: u16,
    pub target: u16,
}

/// One build command.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub run: Run,
    /// Display name; defaults to the command text.
    pub name: Option<String>,
    pub timeout: Option<Duration>,
    pub env: BTreeMap<String, String>,
    /// Working directory relative to the workspace (validated not to escape).
    pub workdir: Option<String>,
    pub allow_failure: bool,
    /// 1-based line of the command in the file, for messages.
    pub line: usize,
}

impl Command {
    /// The name shown in logs and statuses.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => self.run.to_string(),
        }
    }
}

/// How a command is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// Shell form: `/bin/sh -ec TEXT` where the image has a shell.
    Shell(String),
    /// Exec form: program and arguments, never needs a shell.
    Exec(Vec<String>),
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Run::Shell(text) => f.write_str(text),
            Run::Exec(argv) => f.write_str(&argv.join(" ")),
        }
    }
}

/// `artifacts:` in either of its forms.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Artifacts {
    /// Globs relative to the workspace.
    pub paths: Vec<String>,
    /// Globs removed from the matches.
    pub exclude: Vec<String>,
    pub when: When,
}

/// When artifacts are collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum When {
    OnSuccess,
    OnFailure,
    #[default]
    Always,
}

impl When {
    /// Whether to collect after a build that passed (`true`) or failed.
    pub fn collects(self, build_passed: bool) -> bool {
        match self {
            When::Always => true,
            When::OnSuccess => build_passed,
            When::OnFailure => !build_passed,
        }
    }
}
