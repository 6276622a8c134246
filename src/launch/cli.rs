//! Command line of `forge-launch`: argument parsing, logging set-up and the
//! one place where launch errors are rendered and turned into exit codes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use super::binary::Binaries;
use super::container::{self, LocalOptions};
use super::event::{self, parse_event, FactFlags};
use super::node::NodeAccess;
use super::plan;
use super::registry::RegistryAuth;
use super::serve::app::{App, Credentials};
use super::serve::webhook::PushPolicy;
use super::serve::{self, ServeError, ServeOptions};
use super::service::{show_bytes, show_cpus, Limits, ResourcePolicy};
use super::swarm::{self, Outcome, SpecSource, SwarmOptions};
use super::LaunchError;
use crate::exit;
use crate::facts::{RawFacts, MAX_TOKEN_FILE_BYTES};
use crate::fsread::{self, Links};
use crate::render::Renderer;
use crate::run::output::Masker;
use crate::secret::Secret;

#[derive(Parser, Debug)]
#[command(
    name = "forge-launch",
    version,
    about = "Launches .forge.yml builds in Docker Swarm services (or locally)"
)]
struct Cli {
    /// More log output (-v: info, -vv: debug, -vvv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build a pull request in a new swarm service.
    Swarm(Box<SwarmArgs>),
    /// Run the same build in a container on the local daemon.
    Local(Box<LocalArgs>),
    /// Remove finished forge build services.
    Gc(GcArgs),
    /// Take the forge's webhooks and build their pull requests and pushes.
    Serve(Box<ServeArgs>),
}

#[derive(Args, Debug)]
struct SwarmArgs {
    /// pull_request webhook payload (whole event or its pull_request object); `-` for stdin.
    #[arg(long, value_name = "FILE")]
    event: Option<PathBuf>,
    /// Repository as OWNER/NAME (overrides the event).
    #[arg(long, value_name = "OWNER/NAME")]
    repo: Option<String>,
    /// Pull request number.
    #[arg(long, value_name = "N")]
    pr: Option<u64>,
    /// Head commit to build.
    #[arg(long)]
    sha: Option<String>,
    /// Where the build posts commit statuses.
    #[arg(long, value_name = "URL")]
    status_url: Option<String>,
    /// Number of commits in the pull request (FORGE_COMMIT_COUNT).
    #[arg(long, value_name = "N")]
    commits: Option<u64>,
    /// GitHub App installation id (FORGE_INSTALL_ID).
    #[arg(long, value_name = "ID")]
    install_id: Option<String>,
    /// Read the .forge.yml from this file instead of the contents API.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Action to run (FORGE_ACTION).
    #[arg(long, default_value = "execute")]
    action: String,
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    placement: PlacementArgs,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    tls: TlsArgs,
    /// Follow the build's logs, remove the service and exit with the build's code.
    #[arg(long)]
    wait: bool,
}

#[derive(Args, Debug)]
struct PlacementArgs {
    /// Container networks to attach (repeatable; `host` for the host network).
    #[arg(long = "network", value_name = "NAME")]
    networks: Vec<String>,
    /// How long to wait for the swarm to create the task's container (image pulls included).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    start_timeout: Duration,
    /// Swarm placement constraint for every build (repeatable), e.g. node.labels.forge.pool==ci.
    #[arg(long = "constraint", value_name = "EXPR")]
    constraints: Vec<String>,
    /// Registry logins for pulling build and sidecar images: a Docker client
    /// config (`auths`, as `docker login` writes it), passed to the swarm
    /// as X-Registry-Auth.
    #[arg(long, value_name = "FILE")]
    registry_auth: Option<PathBuf>,
    /// How many times a build whose node went down is launched again, on another node
    /// (swarm: with --wait).
    #[arg(long, value_name = "N", default_value_t = 1)]
    retry_lost: u32,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address for webhooks (POST), /healthz and /metrics.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    listen: std::net::SocketAddr,
    /// File holding the webhook secret (deliveries must be signed with it).
    #[arg(long, value_name = "FILE")]
    webhook_secret_file: PathBuf,
    /// GitHub App id: builds get installation tokens (instead of --token-file).
    #[arg(
        long,
        value_name = "ID",
        requires = "app_key_file",
        conflicts_with = "token_file"
    )]
    app_id: Option<u64>,
    /// The GitHub App's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "app_id")]
    app_key_file: Option<PathBuf>,
    /// Branches whose pushes are built (comma-separated or repeated)
    /// [default: the repository's default branch]
    #[arg(long, value_name = "BRANCH", value_delimiter = ',')]
    push_branches: Vec<String>,
    /// Pull requests from forks: `build` (the token never reaches build commands) or `skip`.
    #[arg(long, value_enum, default_value = "build")]
    fork_prs: ForkPrs,
    /// Action to run (FORGE_ACTION).
    #[arg(long, default_value = "execute")]
    action: String,
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    placement: PlacementArgs,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    tls: TlsArgs,
    /// Finished build services are removed this long after their creation.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    retention: Duration,
    /// Launches under way at once (each waits for its task's container).
    #[arg(long, value_name = "N", default_value_t = 4)]
    max_launches: usize,
    /// On SIGTERM, how long launches in flight may take to finish.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    shutdown_timeout: Duration,
    /// Log lines as text or JSON objects.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ForkPrs {
    Build,
    Skip,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
struct CommonArgs {
    /// Forge API base URL (FORGE_API_URL; also where the .forge.yml is fetched from).
    #[arg(long, value_name = "URL")]
    api_url: Option<String>,
    /// File holding the forge token (copied into the container as /forge/token).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Where forgexec uploads artifacts (FORGE_ARTIFACTS_URL).
    #[arg(long, value_name = "URL")]
    artifacts_url: Option<String>,
    /// Link shown with commit statuses (FORGE_TARGET_URL).
    #[arg(long, value_name = "URL")]
    target_url: Option<String>,
    /// The static forgexec to copy into the container: a binary (used where
    /// its architecture matches) or a directory holding forgexec-x86_64 and
    /// forgexec-aarch64 [default: PREFIX/lib/forgexec for PREFIX/bin/forge-launch]
    #[arg(long, value_name = "PATH", env = "FORGE_LAUNCH_FORGEXEC")]
    forgexec: Option<PathBuf>,
}

/// What a build gets: its `resources:` request, else these defaults, else
/// the maxima; a request above a maximum is refused.
#[derive(Args, Debug)]
struct LimitArgs {
    /// CPUs of a build that asks for none in `resources:` (e.g. 1.5).
    #[arg(long, value_name = "N")]
    cpus: Option<f64>,
    /// Memory of a build that asks for none (e.g. 512m, 2g).
    #[arg(long, value_name = "BYTES")]
    memory: Option<String>,
    /// Processes of a build that asks for none.
    #[arg(long, value_name = "N")]
    pids: Option<i64>,
    /// Most CPUs a build may ask for.
    #[arg(long, value_name = "N")]
    max_cpus: Option<f64>,
    /// Most memory a build may ask for (e.g. 8g).
    #[arg(long, value_name = "BYTES")]
    max_memory: Option<String>,
    /// Most processes a build may ask for.
    #[arg(long, value_name = "N")]
    max_pids: Option<i64>,
}

#[derive(Args, Debug)]
struct TlsArgs {
    /// CA certificate of node daemons (default: $DOCKER_CERT_PATH/ca.pem).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (default: $DOCKER_CERT_PATH/cert.pem).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// Client key (default: $DOCKER_CERT_PATH/key.pem).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Port of node daemons.
    #[arg(long, value_name = "PORT")]
    node_port: Option<u16>,
    /// Reach node daemons over plain TCP (anyone who can reach that port is root on the node).
    #[arg(long, conflicts_with_all = ["tls_ca", "tls_cert", "tls_key"])]
    insecure_tcp: bool,
}

#[derive(Args, Debug)]
struct LocalArgs {
    /// Copy a clean export of HEAD instead of the working tree.
    #[arg(long)]
    clean: bool,
    /// Repository directory.
    #[arg(long, value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    /// Read the .forge.yml from this file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Action to run (FORGE_ACTION).
    #[arg(long, default_value = "execute")]
    action: String,
    /// Repository as OWNER/NAME (default: from the origin remote).
    #[arg(long, value_name = "OWNER/NAME")]
    repo: Option<String>,
    /// Pull request number to report (FORGE_PULL_REQUEST).
    #[arg(long, value_name = "N")]
    pr: Option<u64>,
    /// Post statuses to the forge (default: forgexec only prints them).
    #[arg(long)]
    post_statuses: bool,
    /// Status URL for --post-statuses (default: {api-url}/repos/OWNER/NAME/statuses/SHA).
    #[arg(long, value_name = "URL")]
    status_url: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
    /// Where the artifacts are copied to.
    #[arg(long, value_name = "DIR", default_value = "forge-artifacts")]
    artifacts_dir: PathBuf,
    /// Container network mode (e.g. host).
    #[arg(long, value_name = "NAME")]
    network: Option<String>,
    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(Args, Debug)]
struct GcArgs {
    /// Only services created longer ago than this are considered.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    older_than: Duration,
    /// Only this repository's builds (OWNER/NAME).
    #[arg(long, value_name = "OWNER/NAME")]
    repo: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
}

/// The launcher copies megabyte buffers (forgexec and its archive) on
/// many threads. glibc's malloc keeps such buffers in per-thread arenas
/// once its adaptive mmap threshold has grown past their size, so serve's
/// RSS grew with every blocking-pool thread it ever used. A fixed threshold
/// maps each large buffer on its own and returns it when freed; two arenas
/// bound the rest.
#[cfg(target_env = "gnu")]
fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; called first thing
    // in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(target_env = "gnu"))]
fn tune_allocator() {}

/// Entry point of the `forge-launch` binary.
pub fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match &cli.command {
        // A service logs its work by default.
        Command::Serve(args) => {
            init_logging(cli.verbose.max(1), args.log_format == LogFormat::Json)
        }
        _ => init_logging(cli.verbose, false),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            Renderer::default().report("forge-launch: cannot start the async runtime", &e);
            return ExitCode::from(exit::INFRASTRUCTURE);
        }
    };
    // The token is read first so that every error is printed with it
    // masked (a forge may echo it back).
    // So are the registry logins.
    let secrets = match &cli.command {
        Command::Swarm(args) => read_secrets(
            args.common.token_file.as_deref(),
            args.placement.registry_auth.as_deref(),
        ),
        Command::Local(args) => read_secrets(args.common.token_file.as_deref(), None),
        Command::Serve(args) => read_secrets(
            args.common.token_file.as_deref(),
            args.placement.registry_auth.as_deref(),
        ),
        Command::Gc(_) => Ok((None, None)),
    };
    let renderer = match &secrets {
        Ok((token, registry)) => Renderer::new(Masker::new(
            token
                .iter()
                .chain(registry.iter().flat_map(|r| r.secrets()))
                .map(Secret::expose),
        )),
        Err(_) => Renderer::default(),
    };
    let result = match secrets {
        Ok((token, registry)) => runtime.block_on(async {
            match cli.command {
                Command::Swarm(args) => run_swarm(*args, token, registry).await,
                Command::Local(args) => run_local(*args, token).await,
                Command::Gc(args) => run_gc(args).await,
                Command::Serve(args) => run_serve(*args, token, registry).await,
            }
        }),
        Err(err) => Err(err),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            renderer.report("forge-launch", &err);
            ExitCode::from(err.exit_code())
        }
    }
}

async fn run_swarm(
    args: SwarmArgs,
    token: Option<Secret>,
    registry_auth: Option<Arc<RegistryAuth>>,
) -> Result<u8, LaunchError> {
    let from_event = match &args.event {
        Some(path) => {
            let (label, bytes) = read_input(path)?;
            parse_event(&label, &bytes)?
        }
        None => RawFacts::default(),
    };
    let flags = FactFlags {
        repo: args.repo,
        pr: args.pr,
        sha: args.sha,
        status_url: args.status_url,
        commits: args.commits,
        install_id: args.install_id,
        action: Some(args.action),
        api_url: args.common.api_url,
        artifacts_url: args.common.artifacts_url,
        target_url: args.common.target_url,
        insecure_http: FactFlags::insecure_http_from_env(),
    };
    let build = event::resolve(flags.to_raw()?.or(from_event), &plan::new_build_id(), true)?;
    let wait = args.wait;
    let opts = SwarmOptions {
        build,
        spec: match args.config {
            Some(path) => SpecSource::File(path),
            None => SpecSource::Api,
        },
        token,
        forgexec: Binaries::locate(args.common.forgexec.as_deref())?,
        networks: args.placement.networks,
        constraints: args.placement.constraints,
        resources: resource_policy(&args.limits, true)?,
        node_access: node_access(&args.tls),
        wait: args.wait,
        retry_lost: args.placement.retry_lost,
        start_timeout: args.placement.start_timeout,
        labels: Default::default(),
        copy_slots: None,
        registry_auth: registry_auth.clone(),
    };
    match swarm::launch(&opts).await? {
        Outcome::Started { service, .. } => {
            println!("{service}");
            Ok(exit::PASSED)
        }
        Outcome::Finished { service, exit_code } => {
            tracing::info!("{service} finished with exit code {exit_code}");
            Ok(exit::from_container(exit_code))
        }
        // A removed service's container gets SIGTERM: a build that was
        // waited for ended cancelled, and the exit code says so.
        Outcome::Superseded { service } if wait => {
            let code = exit::cancelled(nix::sys::signal::Signal::SIGTERM);
            Renderer::default().say(&format!(
                "forge-launch: {service} was superseded by a newer launch for the same pull request; \
                 its build was cancelled (exit {code})"
            ));
            Ok(code)
        }
        Outcome::Superseded { service } => {
            Renderer::default().say(&format!(
                "forge-launch: {service} was superseded by a newer launch for the same pull request"
            ));
            Ok(exit::PASSED)
        }
    }
}

async fn run_serve(
    args: ServeArgs,
    token: Option<Secret>,
    registry_auth: Option<Arc<RegistryAuth>>,
) -> Result<u8, LaunchError> {
    let serve_error = |err: ServeError| {
        Renderer::default().report("forge-launch serve", &err);
        exit::INFRASTRUCTURE
    };
    let secret = match serve::read_secret(&args.webhook_secret_file) {
        Ok(secret) => secret,
        Err(err) => return Ok(serve_error(err)),
    };
    let credentials = match (args.app_id, &args.app_key_file) {
        (Some(id), Some(key)) => match App::load(id, key) {
            Ok(app) => Credentials::App(Box::new(app)),
            Err(err) => return Ok(serve_error(err.into())),
        },
        _ => match token {
            Some(token) => Credentials::Static(token),
            None => Credentials::None,
        },
    };
    let opts = ServeOptions {
        listen: args.listen,
        credentials,
        push: PushPolicy {
            branches: args.push_branches,
        },
        build_forks: args.fork_prs == ForkPrs::Build,
        action: args.action,
        api_url: args
            .common
            .api_url
            .unwrap_or_else(|| crate::facts::DEFAULT_API_URL.to_string()),
        artifacts_url: args.common.artifacts_url,
        target_url: args.common.target_url,
        forgexec: Binaries::locate(args.common.forgexec.as_deref())?,
        networks: args.placement.networks,
        constraints: args.placement.constraints,
        // A webhook service queues builds on the swarm: what a build may
        // use is also what it reserves.
        resources: resource_policy(&args.limits, true)?,
        node_access: node_access(&args.tls),
        registry_auth: registry_auth.clone(),
        start_timeout: args.placement.start_timeout,
        retry_lost: args.placement.retry_lost,
        retention: args.retention,
        gc_interval: Duration::from_secs(60),
        shutdown_timeout: args.shutdown_timeout,
        queued_after: Duration::from_secs(5),
        max_launches: args.max_launches,
    };
    match serve::run(opts, secret).await {
        Ok(()) => Ok(exit::PASSED),
        Err(err) => Ok(serve_error(err)),
    }
}

async fn run_local(args: LocalArgs, token: Option<Secret>) -> Result<u8, LaunchError> {
    let opts = LocalOptions {
        dir: args.dir,
        clean: args.clean,
        config: args.config,
        action: args.action,
        repo: args.repo,
        pr: args.pr,
        forgexec: Binaries::locate(args.common.forgexec.as_deref())?,
        token,
        post_statuses: args.post_statuses,
        status_url: args.status_url,
        api_url: args.common.api_url,
        target_url: args.common.target_url,
        artifacts_url: args.common.artifacts_url,
        artifacts_dir: args.artifacts_dir,
        network: args.network,
        resources: resource_policy(&args.limits, false)?,
    };
    let outcome = container::run(&opts).await?;
    for file in &outcome.artifacts {
        eprintln!(
            "forge-launch: artifact {}",
            opts.artifacts_dir.join(file).display()
        );
    }
    Ok(exit::from_container(outcome.exit_code))
}

async fn run_gc(args: GcArgs) -> Result<u8, LaunchError> {
    let repo = match &args.repo {
        Some(full) => Some(super::event::split_repo(full)?),
        None => None,
    };
    for name in swarm::gc(args.older_than, repo, &node_access(&args.tls)).await? {
        println!("{name}");
    }
    Ok(exit::PASSED)
}

/// Largest `--event` payload read (GitHub caps webhook payloads at 25 MB).
const MAX_EVENT_BYTES: u64 = 25 * 1024 * 1024;

fn read_input(path: &Path) -> Result<(String, Vec<u8>), LaunchError> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|source| LaunchError::Read {
                path: PathBuf::from("<stdin>"),
                source,
            })?;
        return Ok(("<stdin>".into(), bytes));
    }
    let bytes = fsread::read_regular(path, Links::Follow, MAX_EVENT_BYTES)?;
    Ok((path.display().to_string(), bytes))
}

fn read_token(path: Option<&Path>) -> Result<Option<Secret>, LaunchError> {
    let Some(path) = path else { return Ok(None) };
    let bytes = fsread::read_regular(path, Links::Follow, MAX_TOKEN_FILE_BYTES)?;
    let text = String::from_utf8(bytes).map_err(|_| LaunchError::Flag {
        flag: "--token-file",
        value: path.display().to_string(),
        reason: "the file is not UTF-8 text".into(),
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(LaunchError::Flag {
            flag: "--token-file",
            value: path.display().to_string(),
            reason: "the file is empty".into(),
        });
    }
    Ok(Some(Secret::new(token)))
}

/// The token file's token and the `--registry-auth` logins.
fn read_secrets(
    token_file: Option<&Path>,
    registry_auth: Option<&Path>,
) -> Result<(Option<Secret>, Option<Arc<RegistryAuth>>), LaunchError> {
    let token = read_token(token_file)?;
    let registry = registry_auth
        .map(|path| RegistryAuth::load(path).map(Arc::new))
        .transpose()?;
    Ok((token, registry))
}

fn node_access(tls: &TlsArgs) -> NodeAccess {
    NodeAccess {
        port: tls.node_port,
        tls_ca: tls.tls_ca.clone(),
        tls_cert: tls.tls_cert.clone(),
        tls_key: tls.tls_key.clone(),
        cert_dir: NodeAccess::default_cert_dir(),
        insecure_tcp: tls.insecure_tcp,
    }
}

/// The `--cpus`/`--memory`/`--pids` defaults and their `--max-*` caps;
/// `reserve`: swarm builds also reserve what they get.
fn resource_policy(args: &LimitArgs, reserve: bool) -> Result<ResourcePolicy, LaunchError> {
    let cpus = |flag: &'static str, value: Option<f64>| match value {
        Some(c) if c.is_finite() && c > 0.0 && c <= 1e6 => Ok(Some((c * 1e9).round() as i64)),
        Some(c) => Err(LaunchError::Flag {
            flag,
            value: c.to_string(),
            reason: "expected a positive number".into(),
        }),
        None => Ok(None),
    };
    let pids = |flag: &'static str, value: Option<i64>| match value {
        Some(n) if n <= 0 => Err(LaunchError::Flag {
            flag,
            value: n.to_string(),
            reason: "expected a positive number".into(),
        }),
        other => Ok(other),
    };
    let memory = |flag: &'static str, value: Option<&str>| {
        value.map(|text| parse_bytes(flag, text)).transpose()
    };
    let defaults = Limits {
        nano_cpus: cpus("--cpus", args.cpus)?,
        memory_bytes: memory("--memory", args.memory.as_deref())?,
        pids: pids("--pids", args.pids)?,
        reserve: false,
    };
    let maxima = Limits {
        nano_cpus: cpus("--max-cpus", args.max_cpus)?,
        memory_bytes: memory("--max-memory", args.max_memory.as_deref())?,
        pids: pids("--max-pids", args.max_pids)?,
        reserve: false,
    };
    for (flag, default, max, show) in [
        (
            "--cpus",
            defaults.nano_cpus,
            maxima.nano_cpus,
            show_cpus as fn(i64) -> String,
        ),
        (
            "--memory",
            defaults.memory_bytes,
            maxima.memory_bytes,
            show_bytes,
        ),
        ("--pids", defaults.pids, maxima.pids, |n: i64| n.to_string()),
    ] {
        if let (Some(default), Some(max)) = (default, max) {
            if default > max {
                return Err(LaunchError::Flag {
                    flag,
                    value: show(default),
                    reason: format!("more than its maximum {}", show(max)),
                });
            }
        }
    }
    Ok(ResourcePolicy {
        defaults,
        maxima,
        reserve,
    })
}

/// `512m`, `2g`, `2GiB`, `1048576`, `64k` (binary multiples, as Docker
/// reads them), given to `flag`.
pub fn parse_bytes(flag: &'static str, text: &str) -> Result<i64, LaunchError> {
    let bad = || LaunchError::Flag {
        flag,
        value: text.to_string(),
        reason: "expected a size like 512m or 2g".into(),
    };
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let t = t.strip_suffix('i').unwrap_or(t);
    let (digits, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let n: i64 = digits.parse().map_err(|_| bad())?;
    if n <= 0 {
        return Err(bad());
    }
    n.checked_mul(1 << shift).ok_or_else(bad)
}

fn init_logging(verbose: u8, json: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    if json {
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(crate::render::stderr_colour())
        .without_time()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_memory_sizes() {
        assert_eq!(parse_bytes("--memory", "512m").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("--memory", "2G").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("--memory", "64kb").unwrap(), 64 << 10);
        assert_eq!(parse_bytes("--memory", "1000").unwrap(), 1000);
        assert!(parse_bytes("--memory", "lots").is_err());
        assert!(parse_bytes("--memory", "-1m").is_err());
        assert_eq!(parse_bytes("--memory", "2GiB").unwrap(), 2 << 30);
    }

    fn policy(args: &[&str]) -> Result<ResourcePolicy, LaunchError> {
        let mut argv = vec!["forge-launch", "local"];
        argv.extend_from_slice(args);
        let Command::Local(local) = Cli::try_parse_from(argv).expect("parses").command else {
            panic!("local")
        };
        resource_policy(&local.limits, true)
    }

    #[test]
    fn a_request_gets_what_it_asks_within_the_maxima() {
        let p = policy(&[
            "--cpus",
            "1",
            "--max-cpus",
            "4",
            "--max-memory",
            "2g",
            "--pids",
            "100",
        ])
        .unwrap();
        let asked = crate::spec::Resources {
            nano_cpus: Some(2_500_000_000),
            memory_bytes: None,
            pids: Some(50),
        };
        let got = p.resolve(&asked).unwrap();
        assert_eq!(got.nano_cpus, Some(2_500_000_000));
        // no request, no default: the maximum
        assert_eq!(got.memory_bytes, Some(2 << 30));
        assert_eq!(got.pids, Some(50));
        assert!(got.reserve);
        // nothing asked: the defaults, else the maxima
        let none = p.resolve(&crate::spec::Resources::default()).unwrap();
        assert_eq!(none.nano_cpus, Some(1_000_000_000));
        assert_eq!(none.pids, Some(100));
        assert_eq!(none.memory_bytes, Some(2 << 30));
    }

    #[test]
    fn a_request_over_a_maximum_is_refused_with_exit_2() {
        let p = policy(&["--max-cpus", "2", "--max-memory", "1g"]).unwrap();
        let asked = crate::spec::Resources {
            memory_bytes: Some(4 << 30),
            ..Default::default()
        };
        let err = p.resolve(&asked).unwrap_err();
        assert_eq!(err.exit_code(), exit::INVALID);
        assert_eq!(
            err.to_string(),
            "the .forge.yml asks for memory: 4GiB, more than the 1GiB this launcher allows (--max-memory); ask for less under `resources:`"
        );
        let asked = crate::spec::Resources {
            nano_cpus: Some(2_500_000_000),
            ..Default::default()
        };
        assert!(p
            .resolve(&asked)
            .unwrap_err()
            .to_string()
            .contains("cpus: 2.5, more than the 2 "));
    }

    #[test]
    fn a_default_over_its_maximum_is_a_flag_error() {
        let err = policy(&["--memory", "4g", "--max-memory", "2g"]).unwrap_err();
        assert!(err.to_string().contains("--memory"), "{err}");
        assert!(policy(&["--max-pids", "0"]).is_err());
        assert!(policy(&["--max-cpus=-1"]).is_err());
        assert!(policy(&["--max-cpus", "0"]).is_err());
    }

    #[test]
    fn insecure_tcp_conflicts_with_tls_files() {
        let r = Cli::try_parse_from(["forge-launch", "gc", "--insecure-tcp", "--tls-ca", "ca.pem"]);
        assert!(r.is_err());
    }

    #[test]
    fn exit_codes_pass_through_and_clamp() {
        assert_eq!(exit::from_container(1), 1);
        assert_eq!(exit::from_container(137), 137);
        assert_eq!(exit::from_container(-1), exit::INFRASTRUCTURE);
    }

    #[test]
    fn build_ids_are_valid() {
        assert!(plan::new_build_id().len() > 16);
    }

    #[test]
    fn an_event_or_token_file_that_is_a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("event.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let err = read_input(&fifo).expect_err("a FIFO is not an event");
        assert!(matches!(err, LaunchError::Refused(_)), "{err}");
        assert_eq!(err.exit_code(), exit::INVALID);
        assert!(err.to_string().contains("named pipe"), "{err}");
        let err = read_token(Some(Path::new("/dev/zero"))).expect_err("a device");
        assert!(err.to_string().contains("character device"), "{err}");
        let err = read_input(&dir.path().join("missing.json")).expect_err("missing");
        assert!(matches!(err, LaunchError::Read { .. }), "{err}");
    }
}
