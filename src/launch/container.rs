//! `forge-launch local`: the same build in a container on the local daemon, without a
//! swarm, for reproducing a CI run. The container gets the same environment
//! as a swarm build; the working tree (or, with `--clean`, a clean export of
//! HEAD) is copied to `/forge/workspace` and forgexec plus the token to `/`
//! with the archive API; artifacts are written to `file:///forge/artifacts`
//! inside the container and copied back out afterwards.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::Docker;
use futures_util::StreamExt;

use super::binary::{self, Binaries};
use super::event::{resolve, split_repo};
use super::plan;
use super::service::{Limits, ResourcePolicy};
use super::swarm::{container_owner, follow, parse_spec, upload};
use super::{archive, node, sidecar, LaunchError};
use crate::facts::{default_status_url, var, BuildContext, NameError, RawFacts};
use crate::fsread::{self, Links};
use crate::local::folder_repo_name;
use crate::local::git::{parse_remote_url, Git};
use crate::secret::Secret;
use crate::spec::{self, Spec};

/// Artifacts base inside the container.
pub const ARTIFACTS_IN_CONTAINER: &str = "/forge/artifacts";

/// Everything `forge-launch local` was asked to do.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// A directory inside the repository (default: the current one).
    pub dir: PathBuf,
    pub clean: bool,
    pub config: Option<PathBuf>,
    pub action: String,
    /// `OWNER/NAME`; default from the `origin` remote.
    pub repo: Option<String>,
    pub pr: Option<u64>,
    pub forgexec: Binaries,
    pub token: Option<Secret>,
    /// Post statuses to the forge instead of only printing them.
    pub post_statuses: bool,
    pub status_url: Option<String>,
    pub api_url: Option<String>,
    pub target_url: Option<String>,
    /// Upload artifacts there instead of copying them back out.
    pub artifacts_url: Option<String>,
    pub artifacts_dir: PathBuf,
    pub network: Option<String>,
    /// The container is limited to what the build gets; nothing is reserved.
    pub resources: ResourcePolicy,
}

/// How a local build ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalOutcome {
    pub exit_code: i64,
    /// Files copied into the artifacts directory.
    pub artifacts: Vec<PathBuf>,
}

/// Runs `forge-launch local`.
pub async fn run(opts: &LocalOptions) -> Result<LocalOutcome, LaunchError> {
    let git = Git::new(&opts.dir);
    let root = git.toplevel()?;
    let git = Git::new(&root);
    let sha = git.commit("HEAD")?;
    let build = local_build(opts, &git, &sha)?;
    let (label, bytes) = read_spec(opts, &git, &root)?;
    let spec = parse_spec(&label, &bytes, &build.action)?;
    let limits = opts.resources.resolve(&spec.resources)?;
    let mut env = plan::environment(&spec.environment, &build);
    env.insert(var::WORKSPACE.into(), archive::WORKSPACE.into());
    let workspace = workspace_archive(opts, &git, &root)?;

    let docker = node::connect_manager().await?;
    let mut labels = plan::labels(&build);
    labels.insert("forge.local".into(), "true".into());
    let image = spec.image.clone().unwrap_or_default();
    let forgexec = binary::for_local_daemon(&docker, &opts.forgexec, &image).await?;
    let name = plan::build_name(&build);
    let body = container_body(&image, &spec, env, labels.clone(), opts, &limits);
    let options = bollard::query_parameters::CreateContainerOptionsBuilder::new()
        .name(&name)
        .build();
    let created = docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| LaunchError::docker(format!("creating a container from {image}"), e))?;
    let id = created.id;
    let sidecars = Sidecars {
        spec: &spec,
        build_name: &name,
        labels: &labels,
    };
    let result = run_container(&docker, &id, workspace, &forgexec, opts, &build, sidecars).await;
    sidecar::remove(&docker, &name).await;
    let remove = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    if let Err(e) = docker.remove_container(&id, Some(remove)).await {
        tracing::warn!("could not remove container {id}: {e}");
    }
    result
}

/// The facts of a local build: the flags, then the repository (`origin`
/// names the owner, else `local/<folder>`), the commit at `HEAD`.
fn local_build(opts: &LocalOptions, git: &Git, sha: &str) -> Result<BuildContext, LaunchError> {
    let (owner, repo) = match &opts.repo {
        Some(full) => split_repo(full)?,
        None => git
            .remote_url("origin")
            .as_deref()
            .and_then(parse_remote_url)
            .unwrap_or_else(|| {
                let top = git.dir();
                (crate::local::LOCAL_OWNER.to_string(), folder_repo_name(top))
            }),
    };
    let mut raw = RawFacts {
        owner: Some(owner),
        repo: Some(repo),
        sha: Some(sha.to_string()),
        pull_request: opts.pr.map(|n| n.to_string()),
        action: Some(opts.action.clone()),
        api_url: opts.api_url.clone(),
        target_url: opts.target_url.clone(),
        artifacts_url: Some(
            opts.artifacts_url
                .clone()
                .unwrap_or_else(|| format!("file://{ARTIFACTS_IN_CONTAINER}")),
        ),
        ..RawFacts::default()
    };
    if opts.post_statuses {
        raw.status_url = match (&opts.status_url, &opts.api_url) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(_)) => None,
            (None, None) => {
                return Err(LaunchError::MissingFact {
                    what: "where to post statuses",
                    flag: "--status-url URL or --api-url URL",
                })
            }
        };
    }
    let build_id = plan::build_id(SystemTime::now(), fastrand::u16(..));
    let build_id = build_id.parse().map_err(|e: NameError| LaunchError::Flag {
        flag: "--repo",
        value: build_id,
        reason: e.to_string(),
    })?;
    let mut build = resolve(raw, &build_id, false)?;
    if opts.post_statuses && build.status_url.is_none() {
        build.status_url = Some(default_status_url(
            &build.api_url,
            &build.owner,
            &build.repo,
            &build.sha,
        ));
    }
    Ok(build)
}

/// The `.forge.yml`: `--config`, the committed one with `--clean`, else the
/// work tree's.
fn read_spec(
    opts: &LocalOptions,
    git: &Git,
    root: &Path,
) -> Result<(String, Vec<u8>), LaunchError> {
    let read = |path: &Path| {
        fsread::read_regular(path, Links::Follow, spec::MAX_FILE_BYTES as u64)
            .map_err(LaunchError::from)
    };
    Ok(match &opts.config {
        Some(path) => (path.display().to_string(), read(path)?),
        None if opts.clean => (
            "HEAD:.forge.yml".to_string(),
            git.output_bytes(&["show", "HEAD:.forge.yml"])?,
        ),
        None => {
            let path = root.join(".forge.yml");
            (path.display().to_string(), read(&path)?)
        }
    })
}

/// The source as a tar for `/forge/workspace`: `HEAD` with `--clean`, else
/// the work tree's tracked and untracked-but-not-ignored files, without the
/// artifacts directory.
fn workspace_archive(opts: &LocalOptions, git: &Git, root: &Path) -> Result<Vec<u8>, LaunchError> {
    if opts.clean {
        return Ok(git.output_bytes(&[
            "archive",
            "--format=tar",
            "--prefix=forge/workspace/",
            "HEAD",
        ])?);
    }
    let listed = git.output_bytes(&[
        "ls-files",
        "-z",
        "--cached",
        "--others",
        "--exclude-standard",
    ])?;
    let artifacts_rel = opts
        .artifacts_dir
        .canonicalize()
        .ok()
        .and_then(|a| a.strip_prefix(root).ok().map(Path::to_path_buf));
    let files: Vec<PathBuf> = listed
        .split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| PathBuf::from(String::from_utf8_lossy(f).into_owned()))
        .filter(|f| artifacts_rel.as_ref().is_none_or(|a| !f.starts_with(a)))
        .collect();
    archive::workspace_archive(root, &files, archive::Owner::ROOT)
        .map_err(|e| LaunchError::io("archiving the working tree", e))
}

fn container_body(
    image: &str,
    spec: &Spec,
    env: std::collections::BTreeMap<String, String>,
    labels: HashMap<String, String>,
    opts: &LocalOptions,
    limits: &Limits,
) -> ContainerCreateBody {
    let port_bindings: HashMap<String, Option<Vec<PortBinding>>> = spec
        .ports
        .iter()
        .map(|p| {
            (
                format!("{}/tcp", p.target),
                Some(vec![PortBinding {
                    host_ip: None,
                    host_port: Some(p.published.to_string()),
                }]),
            )
        })
        .collect();
    ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(vec![super::service::COMMAND.to_string()]),
        env: Some(plan::env_list(&env)),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: opts.network.clone(),
            nano_cpus: limits.nano_cpus,
            memory: limits.memory_bytes,
            pids_limit: limits.pids,
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            extra_hosts: (!spec.services.is_empty()).then(|| sidecar::host_entries(spec)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What the sidecar services of a build need.
struct Sidecars<'a> {
    spec: &'a Spec,
    build_name: &'a str,
    labels: &'a HashMap<String, String>,
}

async fn run_container(
    docker: &Docker,
    id: &str,
    workspace: Vec<u8>,
    forgexec: &[u8],
    opts: &LocalOptions,
    build: &BuildContext,
    sidecars: Sidecars<'_>,
) -> Result<LocalOutcome, LaunchError> {
    // The image's USER owns the workspace, /forge and the token.
    let owner = container_owner(docker, id).await?;
    let workspace = archive::with_owner(&workspace, owner)
        .map_err(|e| LaunchError::io("archiving the working tree", e))?;
    let executor = archive::executor_archive(forgexec, opts.token.as_ref(), owner)
        .map_err(|e| LaunchError::io("building the executor archive", e))?;
    // The sidecars are made while the build's files are copied; they start
    // once its container runs (they join its network).
    let beside = sidecar::Beside {
        build_name: sidecars.build_name,
        build_id: build.build_id.as_str(),
        container: id,
        labels: sidecars.labels,
        registry_auth: None,
    };
    let create = async {
        if sidecars.spec.services.is_empty() {
            return Ok(Vec::new());
        }
        let wrapper = archive::forgexec_archive(forgexec)
            .map_err(|e| LaunchError::io("building the sidecar archive", e))?;
        sidecar::create(docker, sidecars.spec, &beside, &wrapper).await
    };
    let copy = async {
        upload(docker, id, workspace).await?;
        upload(docker, id, executor).await
    };
    let (copied, created) = tokio::join!(copy, create);
    copied?;
    docker
        .start_container(id, None)
        .await
        .map_err(|e| LaunchError::docker(format!("starting container {id}"), e))?;
    // forgexec waits for their ports and reports one that never opens.
    if let Err(err) = match created {
        Ok(created) if created.is_empty() => Ok(()),
        Ok(created) => sidecar::start(docker, &created, sidecars.build_name).await,
        Err(err) => Err(err),
    } {
        tracing::error!("{err}");
    }
    let exit_code = tokio::select! {
        code = follow(docker, id) => code?,
        _ = tokio::signal::ctrl_c() => {
            return Err(LaunchError::Interrupted);
        }
    };
    let artifacts = if opts.artifacts_url.is_some() {
        Vec::new()
    } else {
        copy_artifacts_out(docker, id, build, &opts.artifacts_dir).await?
    };
    Ok(LocalOutcome {
        exit_code,
        artifacts,
    })
}

/// Copies `{base}/{owner}/{repo}/{sha}/{action}/{build_id}/*` out of the
/// container into `dest`.
async fn copy_artifacts_out(
    docker: &Docker,
    id: &str,
    build: &BuildContext,
    dest: &Path,
) -> Result<Vec<PathBuf>, LaunchError> {
    let path = format!(
        "{ARTIFACTS_IN_CONTAINER}/{}",
        crate::artifacts::object_prefix(
            &build.owner,
            &build.repo,
            &build.sha,
            &build.action,
            &build.build_id
        )
    );
    let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::new()
        .path(&path)
        .build();
    let mut stream = docker.download_from_container(id, Some(options));
    let mut tar = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => tar.extend_from_slice(&bytes),
            Err(e) if super::error::is_not_found(&e) => {
                tracing::info!("the build left no artifacts at {path}");
                return Ok(Vec::new());
            }
            Err(e) => return Err(LaunchError::docker(format!("copying {path} out"), e)),
        }
    }
    std::fs::create_dir_all(dest)
        .map_err(|e| LaunchError::io(format!("creating {}", dest.display()), e))?;
    // the archive's top entry is the build id directory
    archive::unpack_files(&tar[..], dest, 1)
        .map_err(|e| LaunchError::io(format!("unpacking artifacts into {}", dest.display()), e))
}
