//! One CI build inside the container, end to end: read the build context,
//! take the token, make sure the source tree is there (fetching the commit's
//! zipball when it is not), load `.forge.yml`, run setup and the action's
//! commands, collect and upload artifacts and the build log, and post commit
//! statuses all along, ending with exactly one final status whatever
//! happened. Returns the process exit code (see README). [`BuildOptions`]
//! are the only differences a local run (`forgexec run`, the pre-push hook)
//! makes: which stages run, how much reaches the console, whether a missing
//! source tree is fetched; everything else is the CI code path.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::artifacts::{self, ArtifactStore};
use crate::context::{BuildContext, ContextError, TokenSource};
use crate::forge::{ForgeClient, StatusState};
use crate::http::HttpClient;
use crate::run::cancel::{signal_name, Cancellation};
use crate::run::output::{ConsoleMode, Masker, OutputSink};
use crate::run::{format_duration, Runner, Stage, StageResult};
use crate::secret::Secret;
use crate::spec::{self, Command, Spec};
use crate::status::StatusReporter;

/// Exit codes (README: "Exit codes").
pub mod exit {
    pub const PASSED: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const INVALID: u8 = 2;
    pub const INFRASTRUCTURE: u8 = 3;
}

/// How a build ended, before statuses and uploads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Passed(String),
    Failed(String),
    Invalid(String),
    Infrastructure(String),
    Cancelled { signal: i32, description: String },
}

impl Verdict {
    fn state(&self) -> StatusState {
        match self {
            Verdict::Passed(_) => StatusState::Success,
            Verdict::Failed(_) => StatusState::Failure,
            _ => StatusState::Error,
        }
    }

    fn description(&self) -> &str {
        match self {
            Verdict::Passed(d)
            | Verdict::Failed(d)
            | Verdict::Invalid(d)
            | Verdict::Infrastructure(d) => d,
            Verdict::Cancelled { description, .. } => description,
        }
    }

    fn exit_code(&self) -> u8 {
        match self {
            Verdict::Passed(_) => exit::PASSED,
            Verdict::Failed(_) => exit::FAILED,
            Verdict::Invalid(_) => exit::INVALID,
            Verdict::Infrastructure(_) => exit::INFRASTRUCTURE,
            Verdict::Cancelled { signal, .. } => (128 + signal).clamp(0, 255) as u8,
        }
    }
}

/// Which stages a build runs: all of them in CI, a subset with
/// `forgexec run --stage` and in the pre-push hook (setup and test).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageSelection {
    pub setup: bool,
    pub test: bool,
    pub artifacts: bool,
}

impl StageSelection {
    pub const ALL: StageSelection = StageSelection {
        setup: true,
        test: true,
        artifacts: true,
    };

    /// Just these stages; none given means all.
    pub fn only(stages: &[Stage]) -> Self {
        if stages.is_empty() {
            return Self::ALL;
        }
        StageSelection {
            setup: stages.contains(&Stage::Setup),
            test: stages.contains(&Stage::Test),
            artifacts: stages.contains(&Stage::Artifacts),
        }
    }

    pub fn includes(&self, stage: Stage) -> bool {
        match stage {
            Stage::Setup => self.setup,
            Stage::Test => self.test,
            Stage::Artifacts => self.artifacts,
        }
    }
}

impl Default for StageSelection {
    fn default() -> Self {
        Self::ALL
    }
}

/// How a build runs beyond its context; the defaults are CI's.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub stages: StageSelection,
    /// `None`: every line of output on stdout as it comes, statuses printed
    /// (CI). `Some(label)`: on stderr only a progress line per stage
    /// (`{label} test ... ok (1.2s)`) and the full output of a failing
    /// command; the build log still gets everything.
    pub progress: Option<String>,
    /// Fetch the commit's zipball when the workspace is empty (CI); a local
    /// checkout is used as it is.
    pub fetch_missing_source: bool,
    /// Globs never collected as artifacts (the local artifact folder).
    pub artifact_excludes: Vec<String>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            stages: StageSelection::ALL,
            progress: None,
            fetch_missing_source: true,
            artifact_excludes: Vec::new(),
        }
    }
}

/// How a build ended: its exit code and the final status's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOutcome {
    pub exit_code: u8,
    pub description: String,
}

/// Runs the build described by the process environment. Called as the
/// container's command (after [`crate::init`] has split off PID 1).
pub fn run_from_env() -> u8 {
    let mut ctx = match BuildContext::from_env() {
        Ok(ctx) => ctx,
        Err(err) => {
            eprintln!("forgexec: invalid build environment\n{err}");
            report_invalid_environment(&err);
            return exit::INVALID;
        }
    };
    // The credential is read and its file removed before anything else.
    let token = match ctx.take_token() {
        Ok(token) => token,
        Err(err) => {
            eprintln!("forgexec: {err}");
            return exit::INFRASTRUCTURE;
        }
    };
    let cancel = match Cancellation::from_signals(ctx.grace) {
        Ok(cancel) => cancel,
        Err(err) => {
            eprintln!("forgexec: cannot install signal handlers: {err}");
            return exit::INFRASTRUCTURE;
        }
    };
    Build::new(ctx, token, cancel, std::env::vars_os().collect()).run()
}

/// Without a valid environment there is no build, but the pull request must
/// still get a final status: when `FORGE_STATUS_URL` and a credential are
/// usable, post `error` naming the first bad variable (best effort).
fn report_invalid_environment(err: &ContextError) {
    let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let Some(status_url) = get("FORGE_STATUS_URL") else {
        return;
    };
    if err
        .problems
        .iter()
        .any(|p| p.variable == "FORGE_STATUS_URL")
    {
        return;
    }
    let token_file = get("FORGE_TOKEN_FILE");
    let token_env = get("FORGE_TOKEN");
    let source = TokenSource::from_vars(token_file.as_deref(), token_env.as_deref(), Path::exists);
    let token = match source.take() {
        Ok(Some(token)) => token,
        Ok(None) => return,
        Err(err) => {
            eprintln!("forgexec: no error status posted: {err}");
            return;
        }
    };
    let Ok(http) = HttpClient::new(get("FORGE_CA_CERT").as_deref().map(Path::new)) else {
        return;
    };
    let api_url = get("FORGE_API_URL").unwrap_or_else(|| crate::context::DEFAULT_API_URL.into());
    let context = get("FORGE_STATUS_CONTEXT").unwrap_or_else(|| {
        format!(
            "forge/{}",
            get("FORGE_ACTION").unwrap_or_else(|| "execute".into())
        )
    });
    let mut description = match err.problems.first() {
        Some(p) => format!("invalid build environment: {} {}", p.variable, p.problem),
        None => "invalid build environment".to_string(),
    };
    if err.problems.len() > 1 {
        description.push_str(&format!(" (+{} more)", err.problems.len() - 1));
    }
    let masker = Masker::new([token.expose()]);
    let forge = ForgeClient::new(&api_url, Some(token), http);
    let reporter = StatusReporter::start(
        Some((forge, status_url)),
        context,
        get("FORGE_TARGET_URL"),
        masker,
    );
    if let Err(err) = reporter.finish(StatusState::Error, description, None) {
        eprintln!("forgexec: the error status could not be posted: {err}");
    }
}

/// One build with everything it needs; tests drive it directly.
pub struct Build {
    ctx: BuildContext,
    token: Option<Secret>,
    cancel: Cancellation,
    image_env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    options: BuildOptions,
}

impl Build {
    pub fn new(
        ctx: BuildContext,
        token: Option<Secret>,
        cancel: Cancellation,
        image_env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    ) -> Self {
        Build {
            ctx,
            token,
            cancel,
            image_env,
            options: BuildOptions::default(),
        }
    }

    /// Replaces the CI defaults (see [`BuildOptions`]).
    pub fn with_options(mut self, options: BuildOptions) -> Self {
        self.options = options;
        self
    }

    pub fn context(&self) -> &BuildContext {
        &self.ctx
    }

    /// Runs the build; returns the exit code.
    pub fn run(self) -> u8 {
        self.run_outcome().exit_code
    }

    /// Runs the build; returns the exit code and the final description.
    pub fn run_outcome(self) -> BuildOutcome {
        let started = Instant::now();
        let console_masker = Masker::new(self.token.iter().map(Secret::expose));
        let http = match HttpClient::new(self.ctx.ca_cert.as_deref()) {
            Ok(http) => http,
            Err(err) => {
                let description = console_masker.mask_str(&err.to_string());
                eprintln!("forgexec: {description}");
                return BuildOutcome {
                    exit_code: exit::INFRASTRUCTURE,
                    description,
                };
            }
        };
        let forge = ForgeClient::new(&self.ctx.api_url, self.token.clone(), http.clone());
        let statuses = StatusReporter::start(
            self.ctx.status_url.clone().map(|url| (forge.clone(), url)),
            self.ctx.status_context.clone(),
            self.ctx.target_url.clone(),
            console_masker.clone(),
        )
        .printing(self.options.progress.is_none());
        statuses.pending(format!("{}: starting", self.ctx.action));

        let verdict_and_log = self.build(&forge, &http, &statuses, started);
        let (verdict, log_url) = verdict_and_log;
        let description = verdict.description().to_string();
        let target_url = self.ctx.target_url.clone().or(log_url);
        let exit_code = match statuses.finish(verdict.state(), description.clone(), target_url) {
            Ok(()) => verdict.exit_code(),
            Err(err) => {
                eprintln!("forgexec: the final commit status could not be posted: {err}");
                match verdict {
                    Verdict::Passed(_) => exit::INFRASTRUCTURE,
                    other => other.exit_code(),
                }
            }
        };
        BuildOutcome {
            exit_code,
            description: console_masker.mask_str(&description),
        }
    }

    /// Loads `.forge.yml` from the workspace and picks the action's
    /// commands; on failure prints the problem and returns the verdict.
    fn load_spec(&self) -> Result<(Spec, Vec<Command>), Verdict> {
        let ctx = &self.ctx;
        let spec_path = ctx.workspace.join(".forge.yml");
        let spec = match spec::load(&spec_path) {
            Ok(spec) => spec,
            Err(err) => {
                eprintln!("{err}");
                let diagnostics = err.diagnostics();
                let summary = match diagnostics.first() {
                    Some(d) if diagnostics.len() > 1 => {
                        format!(
                            "{}:{}: {} (+{} more)",
                            d.line,
                            d.column,
                            d.message,
                            diagnostics.len() - 1
                        )
                    }
                    Some(d) => format!("{}:{}: {}", d.line, d.column, d.message),
                    None => err
                        .to_string()
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                };
                return Err(Verdict::Invalid(format!("invalid .forge.yml: {summary}")));
            }
        };
        let Some(commands) = spec.action(&ctx.action).map(<[Command]>::to_vec) else {
            let known = spec.action_names().join(", ");
            eprintln!(
                "forgexec: FORGE_ACTION `{}` is not defined in {}\n  help: use one of: {known}",
                ctx.action,
                spec_path.display()
            );
            return Err(Verdict::Invalid(format!(
                "action `{}` is not in .forge.yml (has: {known})",
                ctx.action
            )));
        };

        Ok((spec, commands))
    }

    /// The stages that run, in order, with their commands.
    fn stages<'a>(&self, spec: &'a Spec, commands: &'a [Command]) -> Vec<(Stage, &'a [Command])> {
        [
            (Stage::Setup, spec.setup.as_slice()),
            (Stage::Test, commands),
        ]
        .into_iter()
        .filter(|(stage, _)| self.options.stages.includes(*stage))
        .collect()
    }

    /// Prints what the build would run, without running anything: each
    /// stage's commands with their argv, working folder and limits, and the
    /// environment forgexec sets for them, secrets masked. Returns the exit
    /// code (0, or 2 for an invalid `.forge.yml`).
    pub fn list(&self, out: &mut dyn Write) -> u8 {
        let ctx = &self.ctx;
        let (spec, commands) = match self.load_spec() {
            Ok(loaded) => loaded,
            Err(verdict) => return verdict.exit_code(),
        };
        let masker = Masker::new(self.secret_values(&spec).iter().map(String::as_str));
        let runner = Runner::new(
            &ctx.workspace,
            self.image_env.iter().cloned(),
            &spec.environment,
            ctx.build_facts(),
            OutputSink::new(Box::new(std::io::sink()), None, masker.clone()),
            self.cancel.clone(),
            spec.timeout,
        );
        let mut text = format!(
            "{}/{} at {} (action {}), workspace {}\n",
            ctx.owner,
            ctx.repo,
            ctx.sha,
            ctx.action,
            ctx.workspace.display()
        );
        if let Some(timeout) = spec.timeout {
            text.push_str(&format!("build timeout: {}\n", format_duration(timeout)));
        }
        // What forgexec sets; commands also inherit the environment forgexec
        // runs in, without the credential variables.
        let mut set: Vec<(String, String)> = spec
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        set.extend(ctx.build_facts());
        set.sort();
        set.dedup_by(|later, earlier| later.0 == earlier.0);
        text.push_str(&format!(
            "environment (on top of the inherited one, without {}):\n",
            crate::context::CREDENTIAL_VARS.join(" and ")
        ));
        for (name, value) in &set {
            text.push_str(&format!(
                "  {name}={}\n",
                value_for_list(&spec, name, value)
            ));
        }
        for (stage, stage_commands) in self.stages(&spec, &commands) {
            let n = stage_commands.len();
            text.push_str(&format!(
                "stage {stage}: {n} command{}\n",
                if n == 1 { "" } else { "s" }
            ));
            for (index, command) in stage_commands.iter().enumerate() {
                text.push_str(&format!("  {}. {}\n", index + 1, command.display_name()));
                match runner.argv(&command.run) {
                    Ok(argv) => {
                        let words: Vec<String> = argv.iter().map(|w| shell_quote(w)).collect();
                        text.push_str(&format!("     argv: {}\n", words.join(" ")));
                    }
                    Err(why) => text.push_str(&format!("     cannot run here: {why}\n")),
                }
                if let Some(dir) = &command.workdir {
                    text.push_str(&format!("     workdir: {dir}\n"));
                }
                if let Some(timeout) = command.timeout {
                    text.push_str(&format!("     timeout: {}\n", format_duration(timeout)));
                }
                if command.allow_failure {
                    text.push_str("     allow_failure: true\n");
                }
                for (name, value) in &command.env {
                    text.push_str(&format!(
                        "     env: {name}={}\n",
                        value_for_list(&spec, name, value)
                    ));
                }
            }
        }
        if self.options.stages.artifacts {
            if spec.artifacts.paths.is_empty() {
                text.push_str("stage artifacts: none configured\n");
            } else {
                let mut excludes = spec.artifacts.exclude.clone();
                excludes.extend(self.options.artifact_excludes.iter().cloned());
                text.push_str(&format!(
                    "stage artifacts: {} (excluding {}) when {:?}, to {}\n",
                    spec.artifacts.paths.join(", "),
                    if excludes.is_empty() {
                        "nothing".to_string()
                    } else {
                        excludes.join(", ")
                    },
                    spec.artifacts.when,
                    ctx.artifacts_url
                        .as_deref()
                        .unwrap_or("nowhere (FORGE_ARTIFACTS_URL unset)")
                ));
            }
        }
        let masked = masker.mask_str(&text);
        match out.write_all(masked.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => exit::PASSED,
            Err(err) => {
                eprintln!("forgexec: cannot print the list: {err}");
                exit::INFRASTRUCTURE
            }
        }
    }

    /// Everything between the first pending status and the final one.
    /// Returns the verdict and the build log's URL when it was uploaded.
    fn build(
        &self,
        forge: &ForgeClient,
        http: &HttpClient,
        statuses: &StatusReporter,
        started: Instant,
    ) -> (Verdict, Option<String>) {
        let ctx = &self.ctx;
        if let Err(verdict) = self.prepare_workspace(forge) {
            return (verdict, None);
        }
        let (spec, commands) = match self.load_spec() {
            Ok(loaded) => loaded,
            Err(verdict) => return (verdict, None),
        };

        let masker = Masker::new(self.secret_values(&spec).iter().map(String::as_str));
        let log_dir = match log_directory() {
            Ok(dir) => dir,
            Err(err) => {
                return (
                    Verdict::Infrastructure(format!("cannot create the build log: {err}")),
                    None,
                )
            }
        };
        let log_path = log_dir.path().join("build.log");
        let sink = match self.output_sink(&log_path, masker) {
            Ok(sink) => sink,
            Err(err) => {
                return (
                    Verdict::Infrastructure(format!("cannot create the build log: {err}")),
                    None,
                )
            }
        };
        sink.line(&format!(
            "forgexec {}: {}/{} at {} ({}), build {}",
            env!("CARGO_PKG_VERSION"),
            ctx.owner,
            ctx.repo,
            ctx.sha,
            ctx.action,
            ctx.build_id
        ));

        let mut runner = Runner::new(
            &ctx.workspace,
            self.image_env.iter().cloned(),
            &spec.environment,
            ctx.build_facts(),
            Arc::clone(&sink),
            self.cancel.clone(),
            spec.timeout,
        );
        let mut results: Vec<StageResult> = Vec::new();
        for (stage, stage_commands) in self.stages(&spec, &commands) {
            if stage_commands.is_empty() {
                continue;
            }
            statuses.pending(format!(
                "{stage}: running {} command(s)",
                stage_commands.len()
            ));
            if let Some(label) = &self.options.progress {
                sink.console_bytes(format!("{label} {stage} ... ").as_bytes());
            }
            let result = runner.run_stage(stage, stage_commands);
            let passed = result.passed();
            if self.options.progress.is_some() {
                let how = if passed { "ok" } else { "FAILED" };
                sink.console_line(&format!("{how} ({})", format_duration(result.elapsed)));
                if !passed {
                    sink.console_bytes(&sink.take_command_output());
                }
            }
            results.push(result);
            if !passed {
                break;
            }
        }
        runner.kill_leftovers();
        let mut verdict = self.verdict(&results);

        let store = match ctx
            .artifacts_url
            .as_deref()
            .map(|base| ArtifactStore::from_base(base, http.clone()))
        {
            None => None,
            Some(Ok(store)) => Some(store),
            Some(Err(err)) => {
                sink.line(&format!("forgexec: FORGE_ARTIFACTS_URL: {err}"));
                let _ = sink.finish();
                return (
                    Verdict::Invalid(format!("FORGE_ARTIFACTS_URL: {err}")),
                    None,
                );
            }
        };
        let prefix =
            artifacts::object_prefix(&ctx.owner, &ctx.repo, &ctx.sha, &ctx.action, &ctx.build_id);
        let build_passed = matches!(verdict, Verdict::Passed(_));
        if !self.options.stages.artifacts {
            sink.line("==> [artifacts] not selected");
        } else if spec.artifacts.paths.is_empty() {
            sink.line("==> [artifacts] none configured");
        } else if !spec.artifacts.when.collects(build_passed) {
            sink.line("==> [artifacts] skipped (`when` does not match this outcome)");
        } else {
            statuses.pending("artifacts: collecting".to_string());
            if let Err(problem) =
                self.collect_artifacts(&spec, &sink, store.as_ref(), &prefix, log_dir.path())
            {
                sink.line(&format!("forgexec: artifacts: {problem}"));
                if build_passed {
                    verdict = Verdict::Infrastructure(format!("artifacts: {problem}"));
                }
            }
        }
        sink.line(&format!(
            "==> {}: {} (build took {})",
            verdict.state().as_str(),
            verdict.description(),
            format_duration(started.elapsed())
        ));
        if let Err(err) = sink.finish() {
            tracing::warn!("build log incomplete: {err}");
        }
        let log_url = match &store {
            None => None,
            Some(store) => match store.put_file(&format!("{prefix}/build.log"), &log_path) {
                Ok(url) => Some(url),
                Err(err) => {
                    eprintln!("forgexec: the build log could not be uploaded: {err}");
                    if matches!(verdict, Verdict::Passed(_)) {
                        verdict =
                            Verdict::Infrastructure("the build log could not be uploaded".into());
                    }
                    None
                }
            },
        };
        (verdict, log_url.filter(|u| u.starts_with("http")))
    }

    /// The source tree: used as is when it holds files, otherwise fetched.
    fn prepare_workspace(&self, forge: &ForgeClient) -> Result<(), Verdict> {
        let ws = &self.ctx.workspace;
        let populated = std::fs::read_dir(ws)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if populated || !self.options.fetch_missing_source {
            return Ok(());
        }
        if let Err(err) = std::fs::create_dir_all(ws) {
            return Err(Verdict::Infrastructure(format!(
                "cannot create the workspace {}: {err}",
                ws.display()
            )));
        }
        eprintln!(
            "forgexec: fetching {}/{}@{} into {}",
            self.ctx.owner,
            self.ctx.repo,
            self.ctx.sha,
            ws.display()
        );
        forge
            .download_zipball(&self.ctx.owner, &self.ctx.repo, &self.ctx.sha, ws)
            .map(|_| ())
            .map_err(|err| {
                eprintln!("forgexec: cannot fetch the source: {err}");
                Verdict::Infrastructure(format!("cannot fetch the source: {err}"))
            })
    }

    /// The token and the values of the variables the spec marks secret.
    fn secret_values(&self, spec: &Spec) -> Vec<String> {
        let mut values: Vec<String> = self.token.iter().map(|t| t.expose().to_string()).collect();
        for name in &spec.secrets {
            let from_image = self
                .image_env
                .iter()
                .find(|(k, _)| k == name.as_str())
                .map(|(_, v)| v.to_string_lossy().into_owned());
            match spec.environment.get(name).cloned().or(from_image) {
                Some(value) => values.push(value),
                None => tracing::warn!("secret `{name}` is not set; nothing to mask"),
            }
        }
        values
    }

    fn verdict(&self, results: &[StageResult]) -> Verdict {
        if let Some(signal) = self.cancel.signal() {
            let during = results
                .last()
                .and_then(|r| {
                    r.commands
                        .last()
                        .map(|c| format!(" during {}: `{}`", r.stage, c.name))
                })
                .unwrap_or_default();
            return Verdict::Cancelled {
                signal,
                description: format!("cancelled by {}{during}", signal_name(signal)),
            };
        }
        match results.iter().find(|r| !r.passed()) {
            Some(failed) => Verdict::Failed(failed.describe()),
            None => Verdict::Passed(
                results
                    .last()
                    .map(StageResult::describe)
                    .unwrap_or_else(|| "no commands".into()),
            ),
        }
    }

    fn collect_artifacts(
        &self,
        spec: &Spec,
        sink: &OutputSink,
        store: Option<&ArtifactStore>,
        prefix: &str,
        scratch: &Path,
    ) -> Result<(), String> {
        let mut selection = spec.artifacts.clone();
        selection
            .exclude
            .extend(self.options.artifact_excludes.iter().cloned());
        let collection =
            artifacts::collect_all(&self.ctx.workspace, &selection).map_err(|e| e.to_string())?;
        for refused in &collection.refused {
            sink.line(&format!("==> [artifacts] {refused}"));
        }
        let files = collection.files;
        if files.is_empty() {
            sink.line(&format!(
                "==> [artifacts] no files matched {} (excluding {})",
                spec.artifacts.paths.join(", "),
                if spec.artifacts.exclude.is_empty() {
                    "nothing".to_string()
                } else {
                    spec.artifacts.exclude.join(", ")
                }
            ));
            return Ok(());
        }
        let zip_path = scratch.join("artifacts.zip");
        // Only an HTTP upload sends the archive's checksum.
        let checksum = match store {
            Some(store) if store.sends_checksums() => artifacts::Checksum::Compute,
            _ => artifacts::Checksum::Skip,
        };
        let summary = artifacts::pack(&files, &zip_path, checksum).map_err(|e| e.to_string())?;
        sink.line(&format!(
            "==> [artifacts] packed {} file(s), {} bytes into {} bytes",
            summary.files, summary.input_bytes, summary.zip_bytes
        ));
        match store {
            None => sink.line("==> [artifacts] FORGE_ARTIFACTS_URL is not set; not uploaded"),
            Some(store) => {
                let url = store
                    .put_file_with_digest(
                        &format!("{prefix}/artifacts.zip"),
                        &zip_path,
                        summary.sha256,
                    )
                    .map_err(|e| e.to_string())?;
                sink.line(&format!("==> [artifacts] uploaded to {url}"));
            }
        }
        Ok(())
    }
}

impl Build {
    /// Where output goes: stdout as it comes (CI), or held back for the
    /// progress display on stderr; always the build log at `log_path`.
    fn output_sink(&self, log_path: &Path, masker: Masker) -> std::io::Result<Arc<OutputSink>> {
        match self.options.progress {
            None => OutputSink::stdout_and_log(log_path, masker),
            Some(_) => {
                let file = std::fs::File::create(log_path)?;
                Ok(OutputSink::with_mode(
                    Box::new(std::io::stderr()),
                    Some(file),
                    masker,
                    ConsoleMode::FailingCommand,
                ))
            }
        }
    }
}

/// A value as `--list` shows it: the values of `secrets:` are masked even
/// when shorter than the masker's minimum.
fn value_for_list(spec: &Spec, name: &str, value: &str) -> String {
    if spec.secrets.iter().any(|s| s == name) {
        crate::run::output::MASK.to_string()
    } else {
        shell_quote(value)
    }
}

/// A word as a POSIX shell would need it quoted, for display.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%^".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// A private directory for the build log and the artifact zip, outside the
/// workspace; creates the temp directory where an image lacks it.
fn log_directory() -> std::io::Result<tempfile::TempDir> {
    let tmp: PathBuf = std::env::temp_dir();
    std::fs::create_dir_all(&tmp)?;
    tempfile::Builder::new().prefix("forgexec-").tempdir_in(tmp)
}
