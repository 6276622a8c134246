//! The stage runner: runs the commands of a stage in order in the workspace,
//! stops the chain at the first failing command (unless it is marked
//! `allow_failure`), enforces per-command and whole-build time limits, honours
//! cancellation, and reports each command's result in the output and in a
//! [`StageResult`] from which statuses are written.

pub mod cancel;
pub mod output;
pub mod process;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::spec::{Command, Run};
use cancel::{signal_name, Cancellation};
use output::OutputSink;
use process::{Deadline, Finish, Invocation, Limit};

/// PATH for commands when the image sets none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The shell that runs shell-form commands, where the image has one.
pub const SHELL: &str = "/bin/sh";

/// The stages of a build, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Setup,
    Test,
    Artifacts,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Setup => "setup",
            Stage::Test => "test",
            Stage::Artifacts => "artifacts",
        })
    }
}

/// What happened to one command.
#[derive(Debug, Clone)]
pub struct CommandResult {
    pub name: String,
    pub finish: Finish,
    pub elapsed: Duration,
    pub allowed_failure: bool,
}

impl CommandResult {
    /// Did this command break the chain?
    pub fn broke_chain(&self) -> bool {
        !self.finish.succeeded()
            && (!self.allowed_failure || matches!(self.finish, Finish::Cancelled(_)))
    }

    /// Human summary of how it ended: `exited 2`, `timed out after 5s`.
    pub fn how(&self) -> String {
        match &self.finish {
            Finish::Exited(code) => format!("exited {code}"),
            Finish::Signaled(sig) => format!("was killed by {}", signal_name(*sig)),
            Finish::TimedOut(Limit::Command(limit)) => {
                format!("timed out after {}", format_duration(*limit))
            }
            Finish::TimedOut(Limit::Build(limit)) => {
                format!("hit the build timeout of {}", format_duration(*limit))
            }
            Finish::Cancelled(sig) => format!("was cancelled by {}", sig.as_str()),
            Finish::SpawnFailed(why) => format!("could not start: {why}"),
        }
    }
}

/// What happened to one stage.
#[derive(Debug, Clone)]
pub struct StageResult {
    pub stage: Stage,
    pub commands: Vec<CommandResult>,
    /// Commands the stage has (some may not have run).
    pub total: usize,
    pub elapsed: Duration,
}

impl StageResult {
    /// The command that broke the chain, if any.
    pub fn failure(&self) -> Option<&CommandResult> {
        self.commands.iter().find(|c| c.broke_chain())
    }

    pub fn passed(&self) -> bool {
        self.failure().is_none()
    }

    /// Status description, at most a line: `test: 3/3 commands passed in
    /// 1m12s`, "setup: `make deps` exited 2".
    pub fn describe(&self) -> String {
        match self.failure() {
            Some(failed) => format!("{}: `{}` {}", self.stage, failed.name, failed.how()),
            None => {
                let passed = self
                    .commands
                    .iter()
                    .filter(|c| c.finish.succeeded())
                    .count();
                let allowed = self.commands.len() - passed;
                let mut text = format!(
                    "{}: {passed}/{} command{} passed in {}",
                    self.stage,
                    self.total,
                    if self.total == 1 { "" } else { "s" },
                    format_duration(self.elapsed)
                );
                if allowed > 0 {
                    text.push_str(&format!(" ({allowed} allowed to fail)"));
                }
                text
            }
        }
    }
}

/// Runs commands for one build.
pub struct Runner {
    workspace: PathBuf,
    env: BTreeMap<OsString, OsString>,
    facts: Vec<(String, String)>,
    sink: Arc<OutputSink>,
    cancel: Cancellation,
    build_deadline: Option<Deadline>,
    has_shell: bool,
    /// Process groups of commands that ran, killed at the end so that no
    /// process of the build outlives it.
    groups: Vec<i32>,
}

/// What a [`Runner`] needs.
pub struct RunnerConfig {
    /// The folder commands run in (and `workdir:` is relative to).
    pub workspace: PathBuf,
    /// The environment commands start from (the image's); the credential
    /// variables are removed from it.
    pub base_env: Vec<(OsString, OsString)>,
    /// `environment:` of `.forge.yml`, applied over `base_env`.
    pub spec_env: BTreeMap<String, String>,
    /// The build facts (`CI`, `FORGE_*`), applied last.
    pub facts: Vec<(String, String)>,
    pub sink: Arc<OutputSink>,
    pub cancel: Cancellation,
    /// `timeout:` of the whole build.
    pub build_timeout: Option<Duration>,
}

impl Runner {
    pub fn new(config: RunnerConfig) -> Self {
        let mut env: BTreeMap<OsString, OsString> = config
            .base_env
            .into_iter()
            .filter(|(k, _)| !crate::facts::CREDENTIAL_VARS.iter().any(|c| k == c))
            .collect();
        env.entry("PATH".into())
            .or_insert_with(|| DEFAULT_PATH.into());
        for (k, v) in config.spec_env {
            env.insert(k.into(), v.into());
        }
        Runner {
            workspace: config.workspace,
            env,
            facts: config.facts,
            sink: config.sink,
            cancel: config.cancel,
            build_deadline: config.build_timeout.map(|timeout| Deadline {
                at: Instant::now() + timeout,
                timeout,
            }),
            has_shell: Path::new(SHELL).exists(),
            groups: Vec::new(),
        }
    }

    /// Overrides shell detection (tests, and hosts where it is known).
    pub fn with_shell(mut self, has_shell: bool) -> Self {
        self.has_shell = has_shell;
        self
    }

    pub fn sink(&self) -> &Arc<OutputSink> {
        &self.sink
    }

    pub fn cancellation(&self) -> &Cancellation {
        &self.cancel
    }

    /// The environment every command gets (before its own `env:`), sorted:
    /// the inherited one without the credential, `environment:`, the facts.
    pub fn stage_env(&self) -> Vec<(OsString, OsString)> {
        let mut env = self.env.clone();
        for (k, v) in &self.facts {
            env.insert(k.into(), v.into());
        }
        env.into_iter().collect()
    }

    /// The environment a command runs with.
    pub fn command_env(&self, command: &Command) -> Vec<(OsString, OsString)> {
        let mut env = self.env.clone();
        for (k, v) in &command.env {
            env.insert(k.into(), v.into());
        }
        for (k, v) in &self.facts {
            env.insert(k.into(), v.into());
        }
        env.into_iter().collect()
    }

    /// The argv a command runs as, or why it cannot run in this image.
    pub fn argv(&self, run: &Run) -> Result<Vec<String>, String> {
        match run {
            Run::Exec(argv) => Ok(argv.clone()),
            Run::Shell(text) if self.has_shell => {
                Ok(vec![SHELL.into(), "-ec".into(), text.clone()])
            }
            Run::Shell(_) => run
                .words_without_shell()
                .map_err(|e| format!("the image has no {SHELL}: {e}")),
        }
    }

    /// Runs a stage's commands in order until one breaks the chain or the
    /// build is cancelled.
    pub fn run_stage(&mut self, stage: Stage, commands: &[Command]) -> StageResult {
        let started = Instant::now();
        let total = commands.len();
        let mut results = Vec::with_capacity(total);
        for (index, command) in commands.iter().enumerate() {
            if self.cancel.signal().is_some() {
                break;
            }
            let name = command.display_name();
            let label = format!("[{stage} {}/{total}]", index + 1);
            self.sink.begin_command();
            self.sink.line(&format!("==> {label} {name}"));
            let result = self.run_command(command, name);
            let verdict = match (&result.finish, result.allowed_failure) {
                (f, _) if f.succeeded() => format!("passed in {}", format_duration(result.elapsed)),
                (Finish::Cancelled(_), _) => result.how(),
                (_, true) => format!(
                    "{} after {} (allowed to fail)",
                    result.how(),
                    format_duration(result.elapsed)
                ),
                (_, false) => format!(
                    "FAILED: {} after {}",
                    result.how(),
                    format_duration(result.elapsed)
                ),
            };
            self.sink.line(&format!("<== {label} {verdict}"));
            self.sink.end_command();
            let stop = result.broke_chain();
            results.push(result);
            if stop {
                break;
            }
        }
        StageResult {
            stage,
            commands: results,
            total,
            elapsed: started.elapsed(),
        }
    }

    fn run_command(&mut self, command: &Command, name: String) -> CommandResult {
        let started = Instant::now();
        let finish = match self.argv(&command.run) {
            Err(why) => Finish::SpawnFailed(why),
            Ok(argv) => {
                let dir = match &command.workdir {
                    Some(sub) => self.workspace.join(sub),
                    None => self.workspace.clone(),
                };
                let invocation = Invocation {
                    argv,
                    dir,
                    env: self.command_env(command),
                    timeout: command.timeout,
                    build_deadline: self.build_deadline,
                };
                let (pgid, finish) = process::run(&invocation, &self.sink, &self.cancel);
                self.groups.extend(pgid);
                finish
            }
        };
        if let Finish::SpawnFailed(why) = &finish {
            self.sink.line(&format!("forgexec: {why}"));
        }
        CommandResult {
            name,
            finish,
            elapsed: started.elapsed(),
            allowed_failure: command.allow_failure,
        }
    }

    /// Kills whatever the build's commands left running (background
    /// servers, daemons in the commands' process groups).
    pub fn kill_leftovers(&mut self) {
        for pgid in self.groups.drain(..) {
            process::kill_group(Some(pgid));
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.kill_leftovers();
    }
}

/// `850ms`, `4.2s`, `1m12s`, `1h3m`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 {
        format!("{}h{}m", secs / 3600, (secs % 3600) / 60)
    } else if secs >= 60 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else if d.as_millis() >= 10_000 {
        format!("{secs}s")
    } else if d.as_millis() >= 1000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests;
