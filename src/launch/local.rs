//! `forge-launch local`: the same build on the local daemon, without a
//! swarm, for reproducing a CI run. The container gets the same environment
//! as a swarm build; the working tree (or, with `--clean`, a clean export of
//! HEAD) is copied to `/forge/workspace` and forgexec plus the token to `/`
//! with the archive API; artifacts are written to `file:///forge/artifacts`
//! inside the container and copied back out afterwards.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::Docker;
use futures_util::StreamExt;

use super::binary::{self, Binaries};
use super::event::{split_repo, PullRequest};
use super::plan::{self, Endpoints};
use super::service::Limits;
use super::swarm::{container_owner, follow, parse_spec, upload};
use super::{archive, node, LaunchError};
use crate::secret::Secret;

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
    pub limits: Limits,
}

/// How a local build ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalOutcome {
    pub exit_code: i64,
    /// Files copied into the artifacts directory.
    pub artifacts: Vec<PathBuf>,
}

fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>, LaunchError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| LaunchError::Local(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(LaunchError::Local(format!(
            "`git {}` in {} failed: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

fn git_line(dir: &Path, args: &[&str]) -> Result<String, LaunchError> {
    Ok(String::from_utf8_lossy(&git(dir, args)?).trim().to_string())
}

/// `OWNER/NAME` from a remote URL (`git@host:o/r.git`, `https://host/o/r`).
pub fn repo_from_remote(url: &str) -> Option<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix(".git").unwrap_or(trimmed);
    let path = match trimmed.split_once("://") {
        Some((_, rest)) => rest.split_once('/')?.1,
        None => trimmed.split_once(':')?.1,
    };
    let mut parts = path.rsplit('/');
    let repo = parts.next()?;
    let owner = parts.next()?;
    split_repo(&format!("{owner}/{repo}")).ok()?;
    Some(format!("{owner}/{repo}"))
}

/// Runs `forge-launch local`.
pub async fn run(opts: &LocalOptions) -> Result<LocalOutcome, LaunchError> {
    let root = PathBuf::from(git_line(&opts.dir, &["rev-parse", "--show-toplevel"])?);
    let sha = git_line(&root, &["rev-parse", "HEAD"])?;
    let full_repo = match &opts.repo {
        Some(repo) => repo.clone(),
        None => {
            let url = git_line(&root, &["remote", "get-url", "origin"]).unwrap_or_default();
            repo_from_remote(&url).ok_or(LaunchError::MissingFact {
                what: "repository (no usable `origin` remote)",
                flag: "--repo OWNER/NAME",
            })?
        }
    };
    let (owner, repo) = split_repo(&full_repo)?;

    let (label, bytes) = match &opts.config {
        Some(path) => (
            path.display().to_string(),
            std::fs::read(path).map_err(|source| LaunchError::Read {
                path: path.clone(),
                source,
            })?,
        ),
        None if opts.clean => (
            "HEAD:.forge.yml".to_string(),
            git(&root, &["show", "HEAD:.forge.yml"])?,
        ),
        None => {
            let path = root.join(".forge.yml");
            let bytes = std::fs::read(&path).map_err(|source| LaunchError::Read {
                path: path.clone(),
                source,
            })?;
            (path.display().to_string(), bytes)
        }
    };
    let spec = parse_spec(&label, &bytes)?;

    let statuses_url = if opts.post_statuses {
        match (&opts.status_url, &opts.api_url) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(api)) => Some(format!(
                "{}/repos/{owner}/{repo}/statuses/{sha}",
                api.trim_end_matches('/')
            )),
            (None, None) => {
                return Err(LaunchError::MissingFact {
                    what: "where to post statuses",
                    flag: "--status-url URL or --api-url URL",
                })
            }
        }
    } else {
        None
    };
    let pr = PullRequest {
        owner: owner.clone(),
        repo: repo.clone(),
        number: opts.pr.unwrap_or(0),
        sha: sha.clone(),
        statuses_url,
        commits: None,
        install_id: None,
    };
    let build_id = plan::build_id(SystemTime::now(), fastrand::u16(..));
    let endpoints = Endpoints {
        api_url: opts.api_url.clone(),
        artifacts_url: Some(
            opts.artifacts_url
                .clone()
                .unwrap_or_else(|| format!("file://{ARTIFACTS_IN_CONTAINER}")),
        ),
        target_url: opts.target_url.clone(),
    };
    let mut env = plan::environment(
        &spec.environment,
        &pr,
        opts.pr,
        &opts.action,
        &build_id,
        &endpoints,
    );
    env.insert("FORGE_WORKSPACE".into(), archive::WORKSPACE.into());

    let workspace = if opts.clean {
        git(
            &root,
            &[
                "archive",
                "--format=tar",
                "--prefix=forge/workspace/",
                "HEAD",
            ],
        )?
    } else {
        let listed = git(
            &root,
            &[
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
        )?;
        let artifacts_rel = opts
            .artifacts_dir
            .canonicalize()
            .ok()
            .and_then(|a| a.strip_prefix(&root).ok().map(Path::to_path_buf));
        let files: Vec<PathBuf> = listed
            .split(|b| *b == 0)
            .filter(|f| !f.is_empty())
            .map(|f| PathBuf::from(String::from_utf8_lossy(f).into_owned()))
            .filter(|f| artifacts_rel.as_ref().is_none_or(|a| !f.starts_with(a)))
            .collect();
        archive::workspace_archive(&root, &files, archive::Owner::ROOT)
            .map_err(|e| LaunchError::io("archiving the working tree", e))?
    };

    let docker = node::connect_manager().await?;
    let mut labels = plan::labels(&pr, &opts.action, &build_id);
    labels.insert("forge.local".into(), "true".into());
    let image = spec.image.clone().unwrap_or_default();
    let forgexec = binary::for_local_daemon(&docker, &opts.forgexec, &image).await?;
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
    let body = ContainerCreateBody {
        image: Some(image.clone()),
        entrypoint: Some(vec![super::service::COMMAND.to_string()]),
        env: Some(plan::env_list(&env)),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: opts.network.clone(),
            nano_cpus: opts.limits.nano_cpus,
            memory: opts.limits.memory_bytes,
            pids_limit: opts.limits.pids,
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            ..Default::default()
        }),
        ..Default::default()
    };
    let name = plan::service_name(&owner, &repo, opts.pr.unwrap_or(0), &build_id);
    let options = bollard::query_parameters::CreateContainerOptionsBuilder::new()
        .name(&name)
        .build();
    let created = docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| LaunchError::docker(format!("creating a container from {image}"), e))?;
    let id = created.id;
    let result = run_container(&docker, &id, workspace, &forgexec, opts, &pr, &build_id).await;
    let remove = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    if let Err(e) = docker.remove_container(&id, Some(remove)).await {
        tracing::warn!("could not remove container {id}: {e}");
    }
    result
}

async fn run_container(
    docker: &Docker,
    id: &str,
    workspace: Vec<u8>,
    forgexec: &[u8],
    opts: &LocalOptions,
    pr: &PullRequest,
    build_id: &str,
) -> Result<LocalOutcome, LaunchError> {
    // The image's USER owns the workspace, /forge and the token.
    let owner = container_owner(docker, id).await?;
    let workspace = archive::with_owner(&workspace, owner)
        .map_err(|e| LaunchError::io("archiving the working tree", e))?;
    let executor = archive::executor_archive(forgexec, opts.token.as_ref(), owner)
        .map_err(|e| LaunchError::io("building the executor archive", e))?;
    upload(docker, id, workspace).await?;
    upload(docker, id, executor).await?;
    docker
        .start_container(id, None)
        .await
        .map_err(|e| LaunchError::docker(format!("starting container {id}"), e))?;
    let exit_code = tokio::select! {
        code = follow(docker, id) => code?,
        _ = tokio::signal::ctrl_c() => {
            return Err(LaunchError::Local("interrupted; the container was removed".into()));
        }
    };
    let artifacts = if opts.artifacts_url.is_some() {
        Vec::new()
    } else {
        copy_artifacts_out(docker, id, pr, &opts.action, build_id, &opts.artifacts_dir).await?
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
    pr: &PullRequest,
    action: &str,
    build_id: &str,
    dest: &Path,
) -> Result<Vec<PathBuf>, LaunchError> {
    let path = format!(
        "{ARTIFACTS_IN_CONTAINER}/{}/{}/{}/{action}/{build_id}",
        pr.owner, pr.repo, pr.sha
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_from_common_remote_urls() {
        assert_eq!(
            repo_from_remote("git@github.com:octo/widget.git").as_deref(),
            Some("octo/widget")
        );
        assert_eq!(
            repo_from_remote("https://github.com/octo/widget").as_deref(),
            Some("octo/widget")
        );
        assert_eq!(
            repo_from_remote("ssh://git@example.com:2222/octo/widget.git/").as_deref(),
            Some("octo/widget")
        );
        assert_eq!(repo_from_remote("/srv/git/widget"), None);
        assert_eq!(repo_from_remote(""), None);
    }
}
