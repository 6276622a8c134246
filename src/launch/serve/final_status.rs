//! A build that forgexec reported whose final status never reached the
//! forge. forgexec posts it with the build's token, and a GitHub App's
//! installation token lives an hour: a longer build's final word is
//! refused (401), as it is when the forge is down for longer than
//! forgexec's 30 s budget. So when a build's container ends with one of
//! forgexec's own exit codes, serve reads the commit's statuses with a
//! fresh token and, if the build's context still reads `pending` and no
//! other build of that commit runs, posts the state the exit code means.

use std::collections::HashMap;

use bollard::Docker;

use super::builds::{is_cancellation, Watched};
use super::Serve;
use crate::exit;
use crate::launch::forge::{Forge, StatusState};
use crate::launch::{node, plan, service, swarm, LaunchError};

/// What forgexec's exit code says of the build, as a final status; `None`
/// for a code forgexec does not end with.
pub fn state_for_exit(exit_code: i64) -> Option<(StatusState, &'static str)> {
    Some(match exit_code {
        c if c == i64::from(exit::PASSED) || c == i64::from(exit::UNPOSTED) => {
            (StatusState::Success, "passed")
        }
        c if c == i64::from(exit::FAILED) => (StatusState::Failure, "failed"),
        c if c == i64::from(exit::INVALID) => (StatusState::Error, "invalid configuration"),
        c if c == i64::from(exit::INFRASTRUCTURE) => (StatusState::Error, "infrastructure error"),
        c if is_cancellation(c) => (StatusState::Error, "cancelled"),
        _ => return None,
    })
}

/// The description serve posts in forgexec's stead.
pub fn description(outcome: &str) -> String {
    format!(
        "{outcome}; the build's own final status did not reach the forge \
         (its token expired, or the forge was down), so serve posted this"
    )
}

/// Posts the final status of a build that forgexec reported with
/// `exit_code`, when the forge still shows its context `pending`.
pub async fn ensure(serve: &Serve, manager: &Docker, watched: &Watched, exit_code: i64) {
    let name = plan::build_name(&watched.attempt.build);
    match missing(serve, manager, watched).await {
        Ok(false) => {}
        Ok(true) => {
            let Some((state, outcome)) = state_for_exit(exit_code) else {
                return;
            };
            tracing::warn!(
                "{name}: the forge shows no final status; posting {} for exit code {exit_code}",
                state.as_str()
            );
            serve
                .post(
                    &watched.attempt.build,
                    watched.attempt.install_id,
                    state,
                    &description(outcome),
                )
                .await;
        }
        Err(err) => tracing::warn!(
            "{name}: could not check that its final status arrived: {}",
            serve.renderer().error(&err)
        ),
    }
}

/// Whether the build's context on its commit still reads `pending` (or
/// has no status) while no other build of that commit and action runs.
async fn missing(serve: &Serve, manager: &Docker, watched: &Watched) -> Result<bool, LaunchError> {
    let build = &watched.attempt.build;
    if build.status_url.is_none() {
        return Ok(false);
    }
    let token = serve
        .credentials_for(watched.attempt.install_id, &build.repo)
        .await?;
    let state = Forge::new(token)?
        .latest_state(
            &serve.opts.api_url,
            &build.owner,
            &build.repo,
            &build.sha,
            &build.status_context,
        )
        .await?;
    if state.as_deref().is_some_and(|s| s != "pending") {
        return Ok(false);
    }
    Ok(!another_build_runs(serve, manager, watched).await?)
}

/// Whether another build of the same commit and action still runs: its
/// `pending` is its own.
async fn another_build_runs(
    serve: &Serve,
    manager: &Docker,
    watched: &Watched,
) -> Result<bool, LaunchError> {
    let build = &watched.attempt.build;
    let local_node = node::local_node_id(manager).await?;
    let filter = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{}={}/{}", plan::label::REPO, build.owner, build.repo),
            format!("{}={}", plan::label::SHA, build.sha),
            format!("{}={}", plan::label::ACTION, build.action),
        ],
    )]);
    for other in service::list(manager, filter).await? {
        if other.id == watched.running.service_id {
            continue;
        }
        if swarm::build_is_running(manager, &local_node, &other.id, &serve.opts.node_access).await?
        {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgexecs_exit_codes_map_to_final_states() {
        assert_eq!(state_for_exit(0), Some((StatusState::Success, "passed")));
        assert_eq!(state_for_exit(4), Some((StatusState::Success, "passed")));
        assert_eq!(state_for_exit(1), Some((StatusState::Failure, "failed")));
        assert_eq!(state_for_exit(2).map(|s| s.0), Some(StatusState::Error));
        assert_eq!(state_for_exit(3).map(|s| s.0), Some(StatusState::Error));
        let sigterm = i64::from(exit::cancelled(nix::sys::signal::Signal::SIGTERM));
        assert_eq!(
            state_for_exit(sigterm),
            Some((StatusState::Error, "cancelled"))
        );
        assert_eq!(state_for_exit(137), None);
        assert_eq!(state_for_exit(-1), None);
    }

    #[test]
    fn the_description_fits_a_status() {
        for outcome in [
            "passed",
            "failed",
            "invalid configuration",
            "infrastructure error",
        ] {
            assert!(description(outcome).chars().count() <= 140, "{outcome}");
        }
    }
}
