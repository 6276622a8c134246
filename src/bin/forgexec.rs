//! `forgexec`: the in-container build executor. Thin: parses arguments and
//! hands over to the library.

fn main() -> std::process::ExitCode {
    forgexec::cli::main()
}
