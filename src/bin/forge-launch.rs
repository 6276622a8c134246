//! `forge-launch`: see [`forgexec::launch`].
fn main() -> std::process::ExitCode {
    forgexec::launch::cli::main()
}
