//! One CI build inside the container, end to end: read the build context,
//! take the token, make sure the source tree is there (fetching the commit's
//! zipball when it is not), load `.forge.yml`, run setup and the action's
//! commands, collect and upload artifacts and the build log, and post commit
//! statuses all along, ending with exactly one final status whatever
//! happened. Returns the process exit code (see README).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::artifacts::{self, ArtifactStore};
use crate::context::BuildContext;
use crate::forge::{ForgeClient, StatusState};
use crate::http::HttpClient;
use crate::run::cancel::{signal_name, Cancellation};
use crate::run::output::{Masker, OutputSink};
use crate::run::{format_duration, Runner, Stage, StageResult};
use crate::secret::Secret;
use crate::spec::{self, Spec};
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

/// Runs the build described by the process environment. Called as the
/// container's command (after [`crate::init`] has split off PID 1).
pub fn run_from_env() -> u8 {
    let mut ctx = match BuildContext::from_env() {
        Ok(ctx) => ctx,
        Err(err) => {
            eprintln!("forgexec: invalid build environment\n{err}");
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

/// One build with everything it needs; tests drive it directly.
pub struct Build {
    ctx: BuildContext,
    token: Option<Secret>,
    cancel: Cancellation,
    image_env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
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
        }
    }

    pub fn run(self) -> u8 {
        let started = Instant::now();
        let console_masker = Masker::new(self.token.iter().map(Secret::expose));
        let http = match HttpClient::new(self.ctx.ca_cert.as_deref()) {
            Ok(http) => http,
            Err(err) => {
                eprintln!("forgexec: {}", console_masker.mask_str(&err.to_string()));
                return exit::INFRASTRUCTURE;
            }
        };
        let forge = ForgeClient::new(&self.ctx.api_url, self.token.clone(), http.clone());
        let statuses = StatusReporter::start(
            self.ctx.status_url.clone().map(|url| (forge.clone(), url)),
            self.ctx.status_context.clone(),
            self.ctx.target_url.clone(),
            console_masker.clone(),
        );
        statuses.pending(format!("{}: starting", self.ctx.action));

        let verdict_and_log = self.build(&forge, &http, &statuses, started);
        let (verdict, log_url) = verdict_and_log;
        let description = verdict.description().to_string();
        let target_url = self.ctx.target_url.clone().or(log_url);
        match statuses.finish(verdict.state(), description, target_url) {
            Ok(()) => verdict.exit_code(),
            Err(err) => {
                eprintln!("forgexec: the final commit status could not be posted: {err}");
                match verdict {
                    Verdict::Passed(_) => exit::INFRASTRUCTURE,
                    other => other.exit_code(),
                }
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
                return (
                    Verdict::Invalid(format!("invalid .forge.yml: {summary}")),
                    None,
                );
            }
        };
        let Some(commands) = spec.action(&ctx.action) else {
            let known = spec.action_names().join(", ");
            eprintln!(
                "forgexec: FORGE_ACTION `{}` is not defined in {}\n  help: use one of: {known}",
                ctx.action,
                spec_path.display()
            );
            return (
                Verdict::Invalid(format!(
                    "action `{}` is not in .forge.yml (has: {known})",
                    ctx.action
                )),
                None,
            );
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
        let sink = match OutputSink::stdout_and_log(&log_path, masker) {
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
        for (stage, stage_commands) in [
            (Stage::Setup, spec.setup.as_slice()),
            (Stage::Test, commands),
        ] {
            if stage_commands.is_empty() {
                continue;
            }
            statuses.pending(format!(
                "{stage}: running {} command(s)",
                stage_commands.len()
            ));
            let result = runner.run_stage(stage, stage_commands);
            let passed = result.passed();
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
        if spec.artifacts.paths.is_empty() {
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
        if populated {
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
        let collection = artifacts::collect_all(&self.ctx.workspace, &spec.artifacts)
            .map_err(|e| e.to_string())?;
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
        let summary = artifacts::pack(&files, &zip_path).map_err(|e| e.to_string())?;
        sink.line(&format!(
            "==> [artifacts] packed {} file(s), {} bytes into {} bytes",
            summary.files, summary.input_bytes, summary.zip_bytes
        ));
        match store {
            None => sink.line("==> [artifacts] FORGE_ARTIFACTS_URL is not set; not uploaded"),
            Some(store) => {
                let url = store
                    .put_file(&format!("{prefix}/artifacts.zip"), &zip_path)
                    .map_err(|e| e.to_string())?;
                sink.line(&format!("==> [artifacts] uploaded to {url}"));
            }
        }
        Ok(())
    }
}

/// A private directory for the build log and the artifact zip, outside the
/// workspace; creates the temp directory where an image lacks it.
fn log_directory() -> std::io::Result<tempfile::TempDir> {
    let tmp: PathBuf = std::env::temp_dir();
    std::fs::create_dir_all(&tmp)?;
    tempfile::Builder::new().prefix("forgexec-").tempdir_in(tmp)
}
