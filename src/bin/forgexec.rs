//! `forgexec`: the in-container build executor. Thin: parses arguments and
//! hands over to the library.

// The static build's allocator (see Cargo.toml): musl's own unmaps freed
// memory eagerly, which made every command of a build pay for page faults.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    forgexec::cli::main()
}
