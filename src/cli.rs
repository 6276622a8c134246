//! Command-line front end of `forgexec`: argument parsing, logging set-up and
//! the one place where library errors are rendered for humans and turned into
//! exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes shared by every subcommand (documented in README).
pub mod exit {
    pub const PASSED: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const INVALID: u8 = 2;
    pub const INFRASTRUCTURE: u8 = 3;
}

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
            eprintln!("forgexec: building is not implemented yet");
            ExitCode::from(exit::INFRASTRUCTURE)
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
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}
