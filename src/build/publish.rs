//! The end of a build: collect, pack and upload the artifacts the spec asks
//! for, then upload the build log, both under the build's object prefix.

use std::path::{Path, PathBuf};

use crate::artifacts::{self, ArtifactError, ArtifactStore, Checksum};
use crate::facts::BuildContext;
use crate::run::output::OutputSink;
use crate::spec::Spec;

/// Where a build's artifacts and log go.
pub struct Publisher {
    store: Option<ArtifactStore>,
    /// `owner/repo/sha/action/build_id`
    prefix: String,
    /// A private folder for the zip, outside the workspace.
    scratch: PathBuf,
}

impl Publisher {
    pub fn new(store: Option<ArtifactStore>, ctx: &BuildContext, scratch: &Path) -> Publisher {
        Publisher {
            store,
            prefix: artifacts::object_prefix(
                &ctx.owner,
                &ctx.repo,
                &ctx.sha,
                &ctx.action,
                &ctx.build_id,
            ),
            scratch: scratch.to_path_buf(),
        }
    }

    /// Collects, packs and uploads the artifacts; each step is logged.
    pub fn artifacts(
        &self,
        workspace: &Path,
        spec: &Spec,
        extra_excludes: &[String],
        sink: &OutputSink,
    ) -> Result<(), ArtifactError> {
        let mut selection = spec.artifacts.clone();
        selection.exclude.extend(extra_excludes.iter().cloned());
        let collection = artifacts::collect_all(workspace, &selection)?;
        for refused in &collection.refused {
            sink.line(&format!("==> [artifacts] {refused}"));
        }
        let files = collection.files;
        if files.is_empty() {
            sink.line(&format!(
                "==> [artifacts] no files matched {} (excluding {})",
                spec.artifacts.paths.join(", "),
                if spec.artifacts.exclude.is_empty() {
                    "nothing".to_string()
                } else {
                    spec.artifacts.exclude.join(", ")
                }
            ));
            return Ok(());
        }
        let zip_path = self.scratch.join("artifacts.zip");
        // Only an HTTP upload sends the archive's checksum.
        let checksum = match &self.store {
            Some(store) if store.sends_checksums() => Checksum::Compute,
            _ => Checksum::Skip,
        };
        let summary = artifacts::pack(&files, &zip_path, checksum)?;
        sink.line(&format!(
            "==> [artifacts] packed {} file(s), {} bytes into {} bytes",
            summary.files, summary.input_bytes, summary.zip_bytes
        ));
        match &self.store {
            None => sink.line("==> [artifacts] FORGE_ARTIFACTS_URL is not set; not uploaded"),
            Some(store) => {
                let url = store.put_file_with_digest(
                    &format!("{}/artifacts.zip", self.prefix),
                    &zip_path,
                    summary.sha256,
                )?;
                sink.line(&format!(
                    "==> [artifacts] uploaded to {}",
                    crate::http::redact_url(&url)
                ));
            }
        }
        Ok(())
    }

    /// Uploads the finished build log; returns its URL when it is a web
    /// link that carries no credentials (for the final status, which is
    /// public), `None` without a store.
    pub fn log(&self, log_path: &Path) -> Result<Option<String>, ArtifactError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let url = store.put_file(&format!("{}/build.log", self.prefix), log_path)?;
        if crate::http::has_credentials(&url) {
            tracing::info!(
                "the build log at {} is not linked from the status: its URL carries credentials",
                crate::http::redact_url(&url)
            );
            return Ok(None);
        }
        Ok(Some(url).filter(|u| u.starts_with("http")))
    }
}
