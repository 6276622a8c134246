//! What a build would run, as a value (`forgexec run --list`): the commit,
//! the environment forgexec sets, each selected stage's commands with the
//! argv they run as and their limits, and where artifacts would go. The CLI
//! prints it; nothing runs.

use std::fmt;
use std::time::Duration;

use crate::run::format_duration;
use crate::run::output::Masker;
use crate::run::Stage;

/// The plan of one build.
pub struct BuildPlan {
    /// `owner/repo at sha (action a), workspace /path`.
    pub heading: String,
    pub build_timeout: Option<Duration>,
    /// Variables as shown: `secrets:` values already `***`, others quoted.
    pub environment: Vec<(String, String)>,
    /// Variables commands never get.
    pub removed: Vec<&'static str>,
    /// Sidecar services: `db (postgres:16), waits for 127.0.0.1:5432 up to 1m30s`.
    pub services: Vec<String>,
    pub stages: Vec<StagePlan>,
    /// `None` when the artifacts stage is not selected.
    pub artifacts: Option<ArtifactsPlan>,
    /// Masks what a value shown in full may still contain (a secret inside
    /// a command line).
    pub masker: Masker,
}

#[derive(Debug)]
pub struct StagePlan {
    pub stage: Stage,
    pub commands: Vec<CommandPlan>,
}

#[derive(Debug)]
pub struct CommandPlan {
    pub name: String,
    /// The argv it runs as, or why it cannot run here.
    pub argv: Result<Vec<String>, String>,
    pub workdir: Option<String>,
    pub timeout: Option<Duration>,
    pub allow_failure: bool,
    /// `env:` as shown (secrets masked, values quoted).
    pub env: Vec<(String, String)>,
}

#[derive(Debug)]
pub enum ArtifactsPlan {
    NoneConfigured,
    Collect {
        paths: Vec<String>,
        excludes: Vec<String>,
        when: String,
        destination: String,
    },
}

impl fmt::Display for BuildPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masker.mask_str(&self.text()))
    }
}

impl BuildPlan {
    fn text(&self) -> String {
        let mut text = format!("{}\n", self.heading);
        if let Some(timeout) = self.build_timeout {
            text.push_str(&format!("build timeout: {}\n", format_duration(timeout)));
        }
        text.push_str(&format!(
            "environment (inherited, then .forge.yml's, then the build facts; never {}):\n",
            self.removed.join(" and ")
        ));
        for (name, value) in &self.environment {
            text.push_str(&format!("  {name}={value}\n"));
        }
        if !self.services.is_empty() {
            text.push_str("services (started beside the build by the launcher; `forgexec run` expects them running):\n");
            for service in &self.services {
                text.push_str(&format!("  {service}\n"));
            }
        }
        for stage in &self.stages {
            let n = stage.commands.len();
            text.push_str(&format!(
                "stage {}: {n} command{}\n",
                stage.stage,
                if n == 1 { "" } else { "s" }
            ));
            for (index, command) in stage.commands.iter().enumerate() {
                command.write(index + 1, &mut text);
            }
        }
        match &self.artifacts {
            None => {}
            Some(ArtifactsPlan::NoneConfigured) => {
                text.push_str("stage artifacts: none configured\n");
            }
            Some(ArtifactsPlan::Collect {
                paths,
                excludes,
                when,
                destination,
            }) => text.push_str(&format!(
                "stage artifacts: {} (excluding {}) when {when}, to {destination}\n",
                paths.join(", "),
                if excludes.is_empty() {
                    "nothing".to_string()
                } else {
                    excludes.join(", ")
                },
            )),
        }
        text
    }
}

impl CommandPlan {
    fn write(&self, number: usize, text: &mut String) {
        text.push_str(&format!("  {number}. {}\n", self.name));
        match &self.argv {
            Ok(argv) => {
                let words: Vec<String> = argv.iter().map(|w| shell_quote(w)).collect();
                text.push_str(&format!("     argv: {}\n", words.join(" ")));
            }
            Err(why) => text.push_str(&format!("     cannot run here: {why}\n")),
        }
        if let Some(dir) = &self.workdir {
            text.push_str(&format!("     workdir: {dir}\n"));
        }
        if let Some(timeout) = self.timeout {
            text.push_str(&format!("     timeout: {}\n", format_duration(timeout)));
        }
        if self.allow_failure {
            text.push_str("     allow_failure: true\n");
        }
        for (name, value) in &self.env {
            text.push_str(&format!("     env: {name}={value}\n"));
        }
    }
}

/// A word as a POSIX shell would need it quoted, for display.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%^".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> BuildPlan {
        BuildPlan {
            heading: "octo/hello at 0123456 (action lint), workspace /w".into(),
            build_timeout: Some(Duration::from_secs(1200)),
            environment: vec![
                ("API_KEY".into(), "***".into()),
                ("CI".into(), "true".into()),
                ("GREETING".into(), shell_quote("hello world")),
            ],
            removed: vec!["FORGE_TOKEN", "FORGE_TOKEN_FILE"],
            services: Vec::new(),
            stages: vec![StagePlan {
                stage: Stage::Test,
                commands: vec![
                    CommandPlan {
                        name: "cargo clippy".into(),
                        argv: Ok(vec!["cargo".into(), "clippy".into()]),
                        workdir: Some("sub".into()),
                        timeout: Some(Duration::from_secs(300)),
                        allow_failure: true,
                        env: vec![("TOKEN_ECHO".into(), "***".into())],
                    },
                    CommandPlan {
                        name: "echo it's s3cr3t-value".into(),
                        argv: Err("the image has no /bin/sh".into()),
                        workdir: None,
                        timeout: None,
                        allow_failure: false,
                        env: Vec::new(),
                    },
                ],
            }],
            artifacts: Some(ArtifactsPlan::Collect {
                paths: vec!["out/**".into()],
                excludes: Vec::new(),
                when: "OnFailure".into(),
                destination: "file:///w/forge-artifacts".into(),
            }),
            masker: Masker::new(["s3cr3t-value"]),
        }
    }

    #[test]
    fn the_plan_prints_as_the_list_shows_it() {
        assert_eq!(
            plan().to_string(),
            "octo/hello at 0123456 (action lint), workspace /w\n\
             build timeout: 20m0s\n\
             environment (inherited, then .forge.yml's, then the build facts; never FORGE_TOKEN and FORGE_TOKEN_FILE):\n\
             \x20 API_KEY=***\n\
             \x20 CI=true\n\
             \x20 GREETING='hello world'\n\
             stage test: 2 commands\n\
             \x20 1. cargo clippy\n\
             \x20    argv: cargo clippy\n\
             \x20    workdir: sub\n\
             \x20    timeout: 5m0s\n\
             \x20    allow_failure: true\n\
             \x20    env: TOKEN_ECHO=***\n\
             \x20 2. echo it's ***\n\
             \x20    cannot run here: the image has no /bin/sh\n\
             stage artifacts: out/** (excluding nothing) when OnFailure, to file:///w/forge-artifacts\n"
        );
    }

    #[test]
    fn services_are_listed_before_the_stages() {
        let mut plan = plan();
        plan.services = vec!["db (postgres:16): waits for 127.0.0.1:5432 up to 1m".into()];
        let text = plan.to_string();
        let services = text.find("services (started beside the build by the launcher; `forgexec run` expects them running):\n  db (postgres:16): waits for 127.0.0.1:5432 up to 1m\n");
        let stages = text.find("stage test:");
        assert!(services.is_some() && services < stages, "{text}");
    }

    #[test]
    fn words_are_quoted_only_when_a_shell_needs_it() {
        assert_eq!(shell_quote("a-b_c.d/e=f"), "a-b_c.d/e=f");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
