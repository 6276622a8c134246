//! Command-line front end of `forgexec`: argument parsing, logging set-up and
//! the one place where library errors are rendered for humans and turned into
//! exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use crate::build::exit;

#[derive(Parser, Debug)]
#[command(
    name = "forgexec",
    version,
    about = "Runs a .forge.yml build inside any container"
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
        None => {
            // The token will live in this process's memory: keep same-user
            // build commands out of /proc/<pid>/mem and /proc/<pid>/environ.
            if let Err(err) = crate::init::make_non_dumpable() {
                eprintln!("forgexec: cannot mark the process non-dumpable: {err}");
                return ExitCode::from(exit::INFRASTRUCTURE);
            }
            // Before any thread exists: as PID 1, split off the init.
            if let Err(err) = crate::init::split_if_pid1() {
                eprintln!("forgexec: cannot start the PID 1 supervisor: {err}");
                return ExitCode::from(exit::INFRASTRUCTURE);
            }
            let _ = crate::init::make_non_dumpable();
            ExitCode::from(crate::build::run_from_env())
        }
    }
}

fn validate(path: &std::path::Path) -> ExitCode {
    match crate::spec::load(path) {
        Ok(spec) => {
            println!("{}: ok: {}", path.display(), spec.summary());
            ExitCode::from(exit::PASSED)
        }
        Err(err) => {
            eprintln!("{err}");
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
                .without_time(),
        )
        .try_init();
}
