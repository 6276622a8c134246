//! One CI build inside the container, end to end: take the token, make sure
//! the source tree is there (fetching the commit's zipball when it is not),
//! load `.forge.yml`, run setup and the action's commands, collect and
//! upload artifacts and the build log ([`publish`]), and post commit
//! statuses all along, ending with exactly one final status whatever
//! happened ([`verdict`]). [`BuildOptions`] are the only differences a local
//! run (`forgexec run`, the pre-push hook) makes; everything else is the CI
//! code path. [`plan`] is what `--list` shows instead of running.

pub mod plan;
mod publish;
pub mod verdict;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::artifacts::ArtifactStore;
use crate::exit;
use crate::facts::{self, BuildContext, ErrorReporting, FactsError, Mode, RawFacts};
use crate::forge::{ForgeClient, ForgeError, StatusState};
use crate::http::HttpClient;
use crate::render::Renderer;
use crate::run::cancel::Cancellation;
use crate::run::output::{ConsoleMode, Masker, OutputSink};
use crate::run::{format_duration, Runner, RunnerConfig, Stage, StageResult};
use crate::secret::Secret;
use crate::services::logs::ServiceLogs;
use crate::services::{self, ServiceWaitError};
use crate::spec::{self, Command, Spec};
use crate::status::StatusReporter;
use plan::{ArtifactsPlan, BuildPlan, CommandPlan, StagePlan};
use publish::Publisher;
pub use verdict::{BuildError, Verdict};

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
    /// Ask the sidecars' wrappers for their output (CI: the launcher
    /// started them with `forgexec sidecar`).
    pub service_logs: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            stages: StageSelection::ALL,
            progress: None,
            fetch_missing_source: true,
            artifact_excludes: Vec::new(),
            service_logs: true,
        }
    }
}

/// How a build ended: its exit code and the final status's description
/// (masked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOutcome {
    pub exit_code: u8,
    pub description: String,
}

/// Runs the build described by the process environment. Called as the
/// container's command (after [`crate::init`] has split off PID 1).
pub fn run_from_env() -> u8 {
    let console = Renderer::default();
    let raw = RawFacts::from_env();
    let mut ctx = match facts::validate(&raw, Mode::Container, Path::exists) {
        Ok(ctx) => ctx,
        Err(err) => {
            console.say(&format!("forgexec: invalid build environment\n{err}"));
            report_invalid_environment(&raw, &err);
            return exit::INVALID;
        }
    };
    // The credential is read and its file removed before anything else.
    let token = match ctx.take_token() {
        Ok(token) => token,
        Err(err) => {
            console.report("forgexec", &err);
            return err.exit_code();
        }
    };
    let cancel = match Cancellation::from_signals(ctx.grace) {
        Ok(cancel) => cancel,
        Err(err) => {
            console.report("forgexec: cannot install signal handlers", &err);
            return exit::INFRASTRUCTURE;
        }
    };
    Build::new(ctx, token, cancel, std::env::vars_os().collect()).run()
}

/// Without a valid environment there is no build, but the pull request must
/// still get a final status: when `FORGE_STATUS_URL` and a credential are
/// usable, post `error` naming the first bad variable (best effort).
fn report_invalid_environment(raw: &RawFacts, err: &FactsError) {
    let Some(reporting) = ErrorReporting::from_raw(raw, err) else {
        return;
    };
    let token = match reporting.token_source.take() {
        Ok(Some(token)) => token,
        Ok(None) => return,
        Err(err) => {
            Renderer::default().report("forgexec: no error status posted", &err);
            return;
        }
    };
    let renderer = Renderer::new(Masker::new([token.expose()]));
    let Ok(http) = HttpClient::new(reporting.ca_cert.as_deref()) else {
        return;
    };
    let forge = ForgeClient::new(&reporting.api_url, Some(token), http);
    let reporter = StatusReporter::start(
        Some((forge, reporting.status_url)),
        reporting.status_context,
        reporting.target_url,
        renderer.masker().clone(),
    );
    if let Err(err) = reporter.finish(StatusState::Error, err.summary(), None) {
        renderer.report("forgexec: the error status could not be posted", &err);
    }
}

/// One build with everything it needs; tests drive it directly.
pub struct Build {
    ctx: BuildContext,
    token: Option<Secret>,
    cancel: Cancellation,
    image_env: Vec<(OsString, OsString)>,
    options: BuildOptions,
    /// Masks the token in everything printed before the spec's own
    /// secrets are known.
    console: Renderer,
}

impl Build {
    pub fn new(
        ctx: BuildContext,
        token: Option<Secret>,
        cancel: Cancellation,
        image_env: Vec<(OsString, OsString)>,
    ) -> Self {
        let known = known_secrets(&ctx, token.as_ref());
        let console = Renderer::new(Masker::new(known.iter().map(String::as_str)));
        Build {
            ctx,
            token,
            cancel,
            image_env,
            options: BuildOptions::default(),
            console,
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

    /// Runs the build: a first `pending` status, the build, the final
    /// status. Returns the exit code and the final description.
    pub fn run_outcome(self) -> BuildOutcome {
        let started = Instant::now();
        // A FORGE_CA_CERT that cannot be used is the environment's mistake:
        // the build does not run, and its error status goes out through a
        // client with the public roots only (best effort).
        let (http, bad_ca) = match HttpClient::new(self.ctx.ca_cert.as_deref()) {
            Ok(http) => (http, None),
            Err(err) => match HttpClient::new(None) {
                Ok(http) => (http, Some(BuildError::CaCert(Box::new(err)))),
                Err(_) => return self.stopped_before_start(BuildError::CaCert(Box::new(err))),
            },
        };
        let http = http.masking(self.console.masker().clone());
        let forge = ForgeClient::new(&self.ctx.api_url, self.token.clone(), http.clone());
        let statuses = StatusReporter::start(
            self.ctx.status_url.clone().map(|url| (forge.clone(), url)),
            self.ctx.status_context.clone(),
            self.ctx.target_url.clone(),
            self.console.masker().clone(),
        )
        .printing(self.options.progress.is_none());
        statuses.pending(format!("{}: starting", self.ctx.action));

        let (verdict, log_url) = match bad_ca {
            Some(err) => {
                self.console
                    .report("forgexec: invalid build environment", &err);
                (Verdict::Stopped(err), None)
            }
            None => self.build(&forge, &http, &statuses, started),
        };
        let description = verdict.description();
        let target_url = self.ctx.target_url.clone().or(log_url);
        let exit_code = match statuses.finish(verdict.state(), description.clone(), target_url) {
            Ok(()) => verdict.exit_code(),
            Err(err) => {
                self.console.report(
                    "forgexec: the final commit status could not be posted",
                    &err,
                );
                match verdict {
                    Verdict::Passed(_) => exit::UNPOSTED,
                    other => other.exit_code(),
                }
            }
        };
        BuildOutcome {
            exit_code,
            description: self.console.text(&description),
        }
    }

    /// A build that could not even post its first status.
    fn stopped_before_start(&self, err: BuildError) -> BuildOutcome {
        let description = self.console.error(&err);
        self.console.say(&format!("forgexec: {description}"));
        let verdict = Verdict::Stopped(err);
        BuildOutcome {
            exit_code: verdict.exit_code(),
            description,
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
        let stop = |err| (Verdict::Stopped(err), None);
        if let Err(err) = self.prepare_workspace(forge) {
            // A signal that stopped the unpacking is a cancellation, not a
            // failure to fetch.
            if let Some(signal) = self.cancel.signal() {
                let during = Some("the source download".to_string());
                return (Verdict::Cancelled { signal, during }, None);
            }
            return stop(err);
        }
        let (spec, commands) = match self.load_spec() {
            Ok(loaded) => loaded,
            Err(err) => return stop(err),
        };
        let store = match self.artifact_store(http) {
            Ok(store) => store,
            Err(err) => return stop(err),
        };
        let masker = Masker::new(self.secret_values(&spec).iter().map(String::as_str));
        let scratch = match scratch_directory() {
            Ok(dir) => dir,
            Err(err) => return stop(BuildError::BuildLog(err)),
        };
        let log_path = scratch.path().join("build.log");
        let sink = match self.output_sink(&log_path, masker) {
            Ok(sink) => sink,
            Err(err) => return stop(BuildError::BuildLog(err)),
        };
        sink.line(&format!(
            "forgexec {}: {}/{} at {} ({}), build {}",
            env!("CARGO_PKG_VERSION"),
            self.ctx.owner,
            self.ctx.repo,
            self.ctx.sha,
            self.ctx.action,
            self.ctx.build_id
        ));

        let service_logs = (self.options.service_logs && !spec.services.is_empty())
            .then(|| ServiceLogs::watch(self.ctx.build_id.as_str(), &spec.services, &sink));
        let verdict = match self.wait_for_services(&spec, &sink, statuses, service_logs.as_ref()) {
            Some(stopped) => stopped,
            None => self.verdict(&self.run_stages(&spec, &commands, &sink, statuses)),
        };
        if let (Verdict::Failed(_), Some(logs)) = (&verdict, &service_logs) {
            // The usual answer to "why did my test fail" is in a service's log.
            for service in &spec.services {
                logs.write_tail(&service.name, &sink);
            }
        }
        drop(service_logs);
        let publisher = Publisher::new(store, &self.ctx, scratch.path());
        let verdict = self.collect_artifacts(verdict, &spec, &publisher, &sink, statuses);
        sink.line(&format!(
            "==> {}: {} (build took {})",
            verdict.state().as_str(),
            verdict.description(),
            format_duration(started.elapsed())
        ));
        if let Err(err) = sink.finish() {
            tracing::warn!("build log incomplete: {}", self.console.error(&err));
        }
        match publisher.log(&log_path) {
            Ok(url) => (verdict, url),
            Err(err) => {
                self.console
                    .report("forgexec: the build log could not be uploaded", &err);
                (
                    verdict.unless_passed_then(BuildError::LogUpload(Box::new(err))),
                    None,
                )
            }
        }
    }

    /// Before the first command: waits for the sidecar services' ports.
    /// Returns the verdict when they did not come up.
    fn wait_for_services(
        &self,
        spec: &Spec,
        sink: &OutputSink,
        statuses: &StatusReporter,
        logs: Option<&ServiceLogs>,
    ) -> Option<Verdict> {
        let commands_run = self.options.stages.setup || self.options.stages.test;
        if !commands_run || !services::any_ports(&spec.services) {
            return None;
        }
        let awaited = services::describe(&spec.services);
        if self.options.progress.is_some() {
            // Off CI nothing starts them: say what is expected where.
            sink.console_line(&format!(
                "forgexec: .forge.yml declares services ({}); nothing starts them here: waiting for them on 127.0.0.1",
                spec.services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        statuses.pending(format!("waiting for services: {awaited}"));
        sink.line(&format!("==> waiting for services: {awaited}"));
        match services::wait_until_ready(
            &spec.services,
            &self.cancel,
            services::accepts_connections,
        ) {
            Ok(waited) => {
                sink.line(&format!(
                    "==> services ready after {}",
                    format_duration(waited)
                ));
                None
            }
            Err(ServiceWaitError::Cancelled(signal)) => Some(Verdict::Cancelled {
                signal,
                during: Some("the wait for services".to_string()),
            }),
            Err(err) => {
                sink.line(&format!("==> {err}"));
                if let (ServiceWaitError::NotReady { service, .. }, Some(logs)) = (&err, logs) {
                    logs.write_tail(service, sink);
                }
                Some(Verdict::Stopped(BuildError::ServiceNotReady(err)))
            }
        }
    }

    /// Runs the selected stages in order, stopping at the first that fails.
    fn run_stages(
        &self,
        spec: &Spec,
        commands: &[Command],
        sink: &Arc<OutputSink>,
        statuses: &StatusReporter,
    ) -> Vec<StageResult> {
        let mut runner = self.runner(spec, Arc::clone(sink));
        let mut results: Vec<StageResult> = Vec::new();
        for (stage, stage_commands) in self.stages(spec, commands) {
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
        results
    }

    /// The artifacts stage, when selected, configured and due for this
    /// outcome; a failure to publish turns a passed build into an error.
    fn collect_artifacts(
        &self,
        verdict: Verdict,
        spec: &Spec,
        publisher: &Publisher,
        sink: &OutputSink,
        statuses: &StatusReporter,
    ) -> Verdict {
        if !self.options.stages.artifacts {
            sink.line("==> [artifacts] not selected");
        } else if spec.artifacts.paths.is_empty() {
            sink.line("==> [artifacts] none configured");
        } else if !spec.artifacts.when.collects(verdict.passed()) {
            sink.line("==> [artifacts] skipped (`when` does not match this outcome)");
        } else {
            statuses.pending("artifacts: collecting".to_string());
            let published = publisher.artifacts(
                &self.ctx.workspace,
                spec,
                &self.options.artifact_excludes,
                sink,
            );
            if let Err(err) = published {
                sink.line(&format!(
                    "forgexec: artifacts: {}",
                    self.console.error(&err)
                ));
                return verdict.unless_passed_then(BuildError::Artifacts(Box::new(err)));
            }
        }
        verdict
    }

    /// The store `FORGE_ARTIFACTS_URL` names, if any.
    fn artifact_store(&self, http: &HttpClient) -> Result<Option<ArtifactStore>, BuildError> {
        let Some(base) = self.ctx.artifacts_url.as_deref() else {
            return Ok(None);
        };
        match ArtifactStore::from_base(base, http.clone()) {
            Ok(store) => Ok(Some(store)),
            Err(err) => {
                self.console.report("forgexec: FORGE_ARTIFACTS_URL", &err);
                Err(BuildError::ArtifactsUrl(Box::new(err)))
            }
        }
    }

    /// Loads `.forge.yml` from the workspace and picks the action's
    /// commands; a problem is printed in full and returned.
    fn load_spec(&self) -> Result<(Spec, Vec<Command>), BuildError> {
        let spec_path = self.ctx.workspace.join(".forge.yml");
        let spec = spec::load_within(&self.ctx.workspace, &spec_path).map_err(|err| {
            self.console.say(&self.console.error(&err));
            BuildError::Spec(Box::new(err))
        })?;
        let Some(commands) = spec.action(&self.ctx.action).map(<[Command]>::to_vec) else {
            let known: Vec<String> = spec.action_names().iter().map(|a| a.to_string()).collect();
            self.console.say(&format!(
                "forgexec: FORGE_ACTION `{}` is not defined in {}\n  help: use one of: {}",
                self.ctx.action,
                spec_path.display(),
                known.join(", ")
            ));
            return Err(BuildError::UnknownAction {
                action: self.ctx.action.to_string(),
                known,
                path: spec_path,
            });
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

    fn runner(&self, spec: &Spec, sink: Arc<OutputSink>) -> Runner {
        Runner::new(RunnerConfig {
            workspace: self.ctx.workspace.clone(),
            base_env: self.image_env.clone(),
            spec_env: spec.environment.clone(),
            facts: self.ctx.build_facts(),
            sink,
            cancel: self.cancel.clone(),
            build_timeout: spec.timeout,
        })
    }

    /// What the build would run, without running anything: each stage's
    /// commands with their argv, working folder and limits, and the
    /// environment forgexec sets for them, secrets masked.
    pub fn plan(&self) -> Result<BuildPlan, BuildError> {
        let ctx = &self.ctx;
        let (spec, commands) = self.load_spec()?;
        let masker = Masker::new(self.secret_values(&spec).iter().map(String::as_str));
        let sink = OutputSink::new(Box::new(std::io::sink()), None, masker.clone());
        let runner = self.runner(&spec, sink);
        // The whole environment commands get, the inherited part included.
        let environment = runner
            .stage_env()
            .into_iter()
            .map(|(name, value)| {
                let name = name.to_string_lossy().into_owned();
                let value = value_for_list(&spec, &name, &value.to_string_lossy());
                (name, value)
            })
            .collect();
        let stages = self
            .stages(&spec, &commands)
            .into_iter()
            .map(|(stage, stage_commands)| StagePlan {
                stage,
                commands: stage_commands
                    .iter()
                    .map(|command| CommandPlan {
                        name: command.display_name(),
                        argv: runner.argv(&command.run),
                        workdir: command.workdir.clone(),
                        timeout: command.timeout,
                        allow_failure: command.allow_failure,
                        env: command
                            .env
                            .iter()
                            .map(|(name, value)| (name.clone(), value_for_list(&spec, name, value)))
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
        Ok(BuildPlan {
            heading: format!(
                "{}/{} at {} (action {}), workspace {}",
                ctx.owner,
                ctx.repo,
                ctx.sha,
                ctx.action,
                ctx.workspace.display()
            ),
            build_timeout: spec.timeout,
            environment,
            removed: facts::CREDENTIAL_VARS.to_vec(),
            services: spec.services.iter().map(services::summary).collect(),
            stages,
            artifacts: self
                .options
                .stages
                .artifacts
                .then(|| self.artifacts_plan(&spec)),
            masker,
        })
    }

    fn artifacts_plan(&self, spec: &Spec) -> ArtifactsPlan {
        if spec.artifacts.paths.is_empty() {
            return ArtifactsPlan::NoneConfigured;
        }
        let mut excludes = spec.artifacts.exclude.clone();
        excludes.extend(self.options.artifact_excludes.iter().cloned());
        ArtifactsPlan::Collect {
            paths: spec.artifacts.paths.clone(),
            excludes,
            when: format!("{:?}", spec.artifacts.when),
            destination: self
                .ctx
                .artifacts_url
                .as_deref()
                .map(crate::http::redact_url)
                .unwrap_or_else(|| "nowhere (FORGE_ARTIFACTS_URL unset)".into()),
        }
    }

    /// The source tree: used as is when it holds files, otherwise fetched.
    fn prepare_workspace(&self, forge: &ForgeClient) -> Result<(), BuildError> {
        let ws = &self.ctx.workspace;
        let populated = std::fs::read_dir(ws)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if populated || !self.options.fetch_missing_source {
            return Ok(());
        }
        std::fs::create_dir_all(ws).map_err(|source| BuildError::Workspace {
            path: ws.clone(),
            source,
        })?;
        self.console.say(&format!(
            "forgexec: fetching {}/{}@{} into {}",
            self.ctx.owner,
            self.ctx.repo,
            self.ctx.sha,
            ws.display()
        ));
        forge
            .download_zipball_until(
                &self.ctx.owner,
                &self.ctx.repo,
                &self.ctx.sha,
                ws,
                &self.ctx.unpack_limits,
                &|| self.cancel.signal().is_some(),
            )
            .map(|_| ())
            .map_err(|err| match err {
                ForgeError::Unpack { source, .. } if source.is_refusal() => {
                    self.console
                        .report("forgexec: refusing the source archive", &source);
                    BuildError::SourceRefused(Box::new(source))
                }
                err => {
                    self.console
                        .report("forgexec: cannot fetch the source", &err);
                    BuildError::FetchSource(Box::new(err))
                }
            })
    }

    /// The token, the credentials in the build's URLs and the values of
    /// the variables the spec marks secret.
    fn secret_values(&self, spec: &Spec) -> Vec<String> {
        let mut values = known_secrets(&self.ctx, self.token.as_ref());
        for name in &spec.secrets {
            let from_image = self
                .image_env
                .iter()
                .find(|(k, _)| k == name.as_str())
                .map(|(_, v)| v.to_string_lossy().into_owned());
            // A service's variable of that name is as secret.
            let of_services: Vec<String> = spec
                .services
                .iter()
                .filter_map(|s| s.environment.get(name).cloned())
                .collect();
            match spec.environment.get(name).cloned().or(from_image) {
                Some(value) => values.push(value),
                None if of_services.is_empty() => {
                    tracing::warn!("secret `{name}` is not set; nothing to mask")
                }
                None => {}
            }
            values.extend(of_services);
        }
        values
    }

    fn verdict(&self, results: &[StageResult]) -> Verdict {
        if let Some(signal) = self.cancel.signal() {
            let during = results.last().and_then(|r| {
                r.commands
                    .last()
                    .map(|c| format!("{}: `{}`", r.stage, c.name))
            });
            return Verdict::Cancelled { signal, during };
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

/// The secrets a build knows before its spec: the token and the
/// credentials in the URLs it was given (`http://user:PASSWORD@host`).
fn known_secrets(ctx: &BuildContext, token: Option<&Secret>) -> Vec<String> {
    let mut secrets: Vec<String> = token.iter().map(|t| t.expose().to_string()).collect();
    let urls = [
        &ctx.artifacts_url,
        &ctx.status_url,
        &ctx.target_url,
        &Some(ctx.api_url.clone()),
    ];
    for url in urls.into_iter().flatten() {
        secrets.extend(crate::http::url_secrets(url));
    }
    secrets
}

/// A value as `--list` shows it: the values of `secrets:` are masked even
/// when shorter than the masker's minimum.
fn value_for_list(spec: &Spec, name: &str, value: &str) -> String {
    if spec.secrets.iter().any(|s| s == name) {
        crate::run::output::MASK.to_string()
    } else {
        plan::shell_quote(value)
    }
}

/// A private directory for the build log and the artifact zip, outside the
/// workspace; creates the temp directory where an image lacks it.
fn scratch_directory() -> std::io::Result<tempfile::TempDir> {
    let tmp: PathBuf = std::env::temp_dir();
    std::fs::create_dir_all(&tmp)?;
    tempfile::Builder::new().prefix("forgexec-").tempdir_in(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_stages_given_means_all_and_each_is_picked_alone() {
        assert_eq!(StageSelection::only(&[]), StageSelection::ALL);
        let test_only = StageSelection::only(&[Stage::Test]);
        assert!(test_only.includes(Stage::Test));
        assert!(!test_only.includes(Stage::Setup));
        assert!(!test_only.includes(Stage::Artifacts));
        let two = StageSelection::only(&[Stage::Setup, Stage::Artifacts]);
        assert_eq!(
            two,
            StageSelection {
                setup: true,
                test: false,
                artifacts: true
            }
        );
    }
}
