//! Command-line front end of `forgexec`: argument parsing, logging set-up and
//! the one place where library errors are rendered for humans and turned into
//! exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::exit;
use crate::render::Renderer;

#[derive(Parser, Debug)]
#[command(
    name = "forgexec",
    version,
    about = "Runs a .forge.yml build inside any container, on your machine, or before a push",
    long_about = "Runs a .forge.yml build inside any container, on your machine, or before a push.\n\n\
        With no subcommand, runs the CI build the FORGE_* environment describes \
        (inside the build container)."
)]
struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a .forge.yml and report every problem with its line and column.
    Validate {
        /// The file to check.
        #[arg(default_value = ".forge.yml")]
        path: PathBuf,
    },
    /// Print the JSON Schema of the .forge.yml language (for editors).
    Schema,
    /// Run the build of a repository here, as CI would (see README, "Reproduce a CI run").
    Run(RunArgs),
    /// Manage and run the git pre-push hook.
    #[command(subcommand)]
    Hook(HookCommand),
    /// The entrypoint forge-launch gives a sidecar service's container: runs
    /// the service's command and tells the build its last lines and exit.
    #[command(hide = true)]
    Sidecar {
        /// The build's FORGE_BUILD_ID.
        #[arg(long)]
        build: String,
        /// The service's name in .forge.yml.
        name: String,
        /// The service's command.
        #[arg(last = true)]
        argv: Vec<std::ffi::OsString>,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The repository (any folder inside it).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// The action to run (default: FORGE_ACTION, else `execute`).
    #[arg(long, value_name = "NAME")]
    action: Option<String>,
    /// Run only these stages (repeat or separate with commas).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "STAGE")]
    stage: Vec<StageArg>,
    /// Print the stages and commands that would run, with their environment
    /// (secrets masked), and run nothing.
    #[arg(long)]
    list: bool,
    /// Build a fresh temporary checkout of the commit instead of the work
    /// tree (uncommitted and ignored files cannot change the result).
    #[arg(long)]
    clean: bool,
    /// Post the commit statuses to the forge (needs FORGE_TOKEN or
    /// FORGE_TOKEN_FILE); otherwise they are only printed.
    #[arg(long)]
    post_statuses: bool,
    /// Repository owner (default: FORGE_OWNER, else from the origin URL).
    #[arg(long)]
    owner: Option<String>,
    /// Repository name (default: FORGE_REPO, else from the origin URL).
    #[arg(long)]
    repo: Option<String>,
    /// The commit, any revision git knows (default: FORGE_SHA, else HEAD).
    #[arg(long, value_name = "REV")]
    sha: Option<String>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum StageArg {
    Setup,
    Test,
    Artifacts,
}

impl From<StageArg> for crate::run::Stage {
    fn from(stage: StageArg) -> Self {
        match stage {
            StageArg::Setup => crate::run::Stage::Setup,
            StageArg::Test => crate::run::Stage::Test,
            StageArg::Artifacts => crate::run::Stage::Artifacts,
        }
    }
}

#[derive(Subcommand, Debug)]
enum HookCommand {
    /// Write the pre-push hook (an existing hook is kept and run first).
    Install {
        /// The repository (any folder inside it).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Replace an existing hook that cannot be chained (it is kept aside).
        #[arg(long)]
        force: bool,
    },
    /// Remove forgexec's pre-push hook, putting back a chained one.
    Uninstall {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// What the hook runs: builds each pushed commit (refs on stdin, as git
    /// gives them) in a clean checkout; fails to refuse the push.
    PrePush {
        /// The remote's name.
        remote: String,
        /// The remote's URL.
        url: String,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match cli.command {
        Some(Command::Validate { path }) => validate(&path),
        Some(Command::Schema) => {
            println!("{}", crate::spec::json_schema());
            ExitCode::from(exit::PASSED)
        }
        Some(Command::Run(args)) => {
            // A token may live in this process's memory, as in CI.
            let _ = crate::init::make_non_dumpable();
            let options = crate::local::RunOptions {
                dir: args.dir,
                stages: args.stage.into_iter().map(Into::into).collect(),
                list: args.list,
                clean: args.clean,
                post_statuses: args.post_statuses,
                flags: crate::facts::RawFacts {
                    owner: args.owner,
                    repo: args.repo,
                    sha: args.sha,
                    action: args.action,
                    ..Default::default()
                },
            };
            ExitCode::from(print_run(crate::local::run(&options)))
        }
        Some(Command::Hook(hook)) => ExitCode::from(run_hook(hook)),
        Some(Command::Sidecar { build, name, argv }) => {
            ExitCode::from(crate::services::wrapper::run(&build, &name, &argv))
        }
        None => {
            // The token will live in this process's memory: keep same-user
            // build commands out of /proc/<pid>/mem and /proc/<pid>/environ.
            if let Err(err) = crate::init::make_non_dumpable() {
                Renderer::default().report("forgexec: cannot mark the process non-dumpable", &err);
                return ExitCode::from(exit::INFRASTRUCTURE);
            }
            // Before any thread exists: as PID 1, split off the init.
            if let Err(err) = crate::init::split_if_pid1() {
                Renderer::default().report("forgexec: cannot start the PID 1 supervisor", &err);
                return ExitCode::from(exit::INFRASTRUCTURE);
            }
            let _ = crate::init::make_non_dumpable();
            ExitCode::from(crate::build::run_from_env())
        }
    }
}

fn run_hook(command: HookCommand) -> u8 {
    use crate::local::hook;
    match command {
        HookCommand::Install { dir, force } => {
            let exe = match std::env::current_exe().and_then(|p| p.canonicalize()) {
                Ok(exe) => exe,
                Err(err) => {
                    Renderer::default().report("forgexec", &hook::HookError::CurrentExe(err));
                    return exit::INFRASTRUCTURE;
                }
            };
            match hook::install(&dir, &exe, force) {
                Ok(done) => {
                    let verb = if done.updated { "updated" } else { "installed" };
                    println!(
                        "forgexec: pre-push hook {verb} at {} (runs {})",
                        done.hook.display(),
                        exe.display()
                    );
                    if let Some(chained) = done.chained {
                        println!(
                            "forgexec: the hook that was there runs first, from {}",
                            chained.display()
                        );
                    }
                    if let Some(backup) = done.backup {
                        println!(
                            "forgexec: the hook that was there is kept (not run) as {}",
                            backup.display()
                        );
                    }
                    exit::PASSED
                }
                Err(err) => {
                    Renderer::default().report("forgexec", &err);
                    hook_error_code(&err)
                }
            }
        }
        HookCommand::Uninstall { dir } => match hook::uninstall(&dir) {
            Ok(hook::Uninstalled::NotInstalled { hook }) => {
                println!("forgexec: no pre-push hook at {}", hook.display());
                exit::PASSED
            }
            Ok(hook::Uninstalled::Removed { hook, restored }) => {
                println!("forgexec: removed the pre-push hook {}", hook.display());
                if let Some(from) = restored {
                    println!(
                        "forgexec: the chained hook is back in place (from {})",
                        from.display()
                    );
                }
                exit::PASSED
            }
            Err(err) => {
                Renderer::default().report("forgexec", &err);
                hook_error_code(&err)
            }
        },
        HookCommand::PrePush { remote, url, dir } => {
            let _ = crate::init::make_non_dumpable();
            print_pre_push(hook::pre_push(&dir, &remote, &url, std::io::stdin().lock()))
        }
    }
}

/// Prints what `forgexec run` produced; returns its exit code.
fn print_run(result: Result<crate::local::RunOutcome, crate::local::LocalError>) -> u8 {
    use crate::local::RunOutcome;
    let console = Renderer::default();
    match result {
        Ok(RunOutcome::Listed(plan)) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            match write!(out, "{plan}").and_then(|()| out.flush()) {
                Ok(()) => exit::PASSED,
                Err(err) => {
                    console.report("forgexec: cannot print the list", &err);
                    exit::INFRASTRUCTURE
                }
            }
        }
        Ok(RunOutcome::Built(outcome)) => outcome.exit_code,
        Err(err) => {
            console.report("forgexec run", &err);
            err.exit_code()
        }
    }
}

/// Prints the hook's decision; returns its exit code (0 lets the push go).
fn print_pre_push(
    result: Result<crate::local::hook::PrePush, crate::local::hook::PrePushError>,
) -> u8 {
    use crate::local::hook::{PrePush, SKIP_VAR};
    let console = Renderer::default();
    match &result {
        Ok(PrePush::Passed) => {}
        Ok(PrePush::Skipped(value)) => {
            console.say(&format!("forgexec pre-push: skipped ({SKIP_VAR}={value})"));
        }
        Ok(PrePush::Refused { sha, refs, outcome }) => console.say(&format!(
            "forgexec pre-push: {}: push refused: commit {sha} ({}) failed: {}\n  \
             help: fix it and commit, or push anyway with `git push --no-verify` \
             (or {SKIP_VAR}=1)",
            sha.get(..7).unwrap_or(sha),
            refs.join(", "),
            outcome.description
        )),
        Err(err) => console.report("forgexec pre-push", err),
    }
    match result {
        Ok(decision) => decision.exit_code(),
        Err(err) => err.exit_code(),
    }
}

fn hook_error_code(err: &crate::local::hook::HookError) -> u8 {
    use crate::local::hook::HookError;
    match err {
        HookError::Io { .. } | HookError::CurrentExe(_) => exit::INFRASTRUCTURE,
        _ => exit::INVALID,
    }
}

fn validate(path: &std::path::Path) -> ExitCode {
    match crate::spec::load(path) {
        Ok(spec) => {
            println!("{}: ok: {}", path.display(), spec.summary());
            ExitCode::from(exit::PASSED)
        }
        Err(err) => {
            Renderer::default().say(&err.to_string());
            ExitCode::from(exit::INVALID)
        }
    }
}

/// Quiet by default (warnings only); `-v` or `RUST_LOG` for more.
/// `RUST_LOG` takes comma-separated `level` and `target=level` directives
/// (`debug`, `forgexec::http=trace,warn`); span and field filters are not
/// supported (they would carry a regex engine into the static binary).
fn init_logging(verbose: u8) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let default = match verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|directives| !directives.trim().is_empty())
        .and_then(|directives| directives.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(default));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(crate::render::stderr_colour())
                .without_time(),
        )
        .try_init();
}
