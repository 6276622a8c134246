use super::*;
use crate::run::output::{Masker, SharedBuffer};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;

fn command(run: Run) -> Command {
    Command {
        run,
        name: None,
        timeout: None,
        env: BTreeMap::new(),
        workdir: None,
        allow_failure: false,
        line: 1,
    }
}

fn shell(text: &str) -> Command {
    command(Run::Shell(text.into()))
}

struct Fixture {
    console: SharedBuffer,
    runner: Runner,
    _dir: tempfile::TempDir,
}

fn runner_with(timeout: Option<Duration>, secrets: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let console = SharedBuffer::default();
    let sink = OutputSink::new(
        Box::new(console.clone()),
        None,
        Masker::new(secrets.iter().copied()),
    );
    let base = vec![
        (OsString::from("PATH"), OsString::from(DEFAULT_PATH)),
        (
            OsString::from("FORGE_TOKEN"),
            OsString::from("ghp_should_not_leak"),
        ),
        (OsString::from("IMAGE_VAR"), OsString::from("from-image")),
    ];
    let mut spec_env = BTreeMap::new();
    spec_env.insert("SPEC_VAR".to_string(), "from-spec".to_string());
    spec_env.insert("IMAGE_VAR".to_string(), "overridden-by-spec".to_string());
    let facts = vec![
        ("CI".to_string(), "true".to_string()),
        ("FORGE_SHA".to_string(), "abc".to_string()),
    ];
    let runner = Runner::new(RunnerConfig {
        workspace: dir.path().to_path_buf(),
        base_env: base,
        spec_env,
        facts,
        sink,
        cancel: Cancellation::new(Duration::from_secs(1)),
        build_timeout: timeout,
    });
    Fixture {
        console,
        runner,
        _dir: dir,
    }
}

#[test]
fn the_first_failing_command_ends_the_chain() {
    let mut f = runner_with(None, &[]);
    let result = f.runner.run_stage(
        Stage::Test,
        &[shell("echo one"), shell("exit 3"), shell("echo never")],
    );
    assert_eq!(result.commands.len(), 2);
    assert_eq!(result.commands[1].finish, Finish::Exited(3));
    assert_eq!(result.describe(), "test: `exit 3` exited 3");
    let out = f.console.contents();
    assert!(
        out.contains("==> [test 1/3] echo one\none\n<== [test 1/3] passed in"),
        "{out}"
    );
    assert!(
        out.contains("<== [test 2/3] FAILED: exited 3 after"),
        "{out}"
    );
    assert!(!out.contains("never"), "{out}");
}

#[test]
fn allowed_failures_are_reported_but_do_not_break_the_chain() {
    let mut f = runner_with(None, &[]);
    let mut flaky = shell("exit 1");
    flaky.allow_failure = true;
    flaky.name = Some("flaky".into());
    let result = f.runner.run_stage(
        Stage::Test,
        &[flaky, command(Run::Exec(vec!["true".into()]))],
    );
    assert!(result.passed(), "{result:?}\n{}", f.console.contents());
    assert!(
        result
            .describe()
            .starts_with("test: 1/2 commands passed in"),
        "{}",
        result.describe()
    );
    assert!(result.describe().ends_with("(1 allowed to fail)"));
    assert!(f
        .console
        .contents()
        .contains("<== [test 1/2] exited 1 after"));
}

#[test]
fn commands_get_spec_env_and_facts_but_never_the_token() {
    let mut f = runner_with(None, &[]);
    let mut cmd = shell("env");
    cmd.env.insert("CMD_VAR".into(), "from-command".into());
    let result = f.runner.run_stage(Stage::Setup, &[cmd]);
    assert!(result.passed());
    let out = f.console.contents();
    for expected in [
        "IMAGE_VAR=overridden-by-spec",
        "SPEC_VAR=from-spec",
        "CMD_VAR=from-command",
        "CI=true",
        "FORGE_SHA=abc",
    ] {
        assert!(
            out.lines().any(|l| l == expected),
            "missing {expected} in {out}"
        );
    }
    assert!(!out.contains("FORGE_TOKEN"), "{out}");
    assert!(!out.contains("ghp_should_not_leak"), "{out}");
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let mut f = runner_with(None, &[]);
    let marker = f._dir.path().join("grandchild-survived");
    let mut cmd = shell(&format!("(sleep 2; touch {}) & sleep 30", marker.display()));
    cmd.timeout = Some(Duration::from_millis(300));
    let result = f.runner.run_stage(Stage::Test, &[cmd]);
    assert_eq!(
        result.commands[0].finish,
        Finish::TimedOut(Limit::Command(Duration::from_millis(300)))
    );
    assert!(
        result.describe().ends_with("timed out after 300ms"),
        "{}",
        result.describe()
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        !marker.exists(),
        "a process of the timed-out command survived"
    );
}

#[test]
fn the_build_deadline_stops_the_running_command_and_the_chain() {
    let mut f = runner_with(Some(Duration::from_millis(300)), &[]);
    let result = f
        .runner
        .run_stage(Stage::Test, &[shell("sleep 30"), shell("echo never")]);
    assert_eq!(result.commands.len(), 1);
    assert_eq!(
        result.commands[0].finish,
        Finish::TimedOut(Limit::Build(Duration::from_millis(300)))
    );
    assert_eq!(result.commands[0].how(), "hit the build timeout of 300ms");
}

#[test]
fn cancellation_forwards_the_signal_and_stops_the_chain() {
    let mut f = runner_with(None, &[]);
    let cancel = f.runner.cancellation().clone();
    let trigger = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        cancel.cancel(Signal::SIGTERM);
    });
    let cmd = shell("trap 'echo got TERM; exit 143' TERM; while true; do sleep 0.05; done");
    let result = f.runner.run_stage(Stage::Test, &[cmd, shell("echo never")]);
    trigger.join().unwrap();
    assert_eq!(result.commands.len(), 1);
    assert_eq!(
        result.commands[0].finish,
        Finish::Cancelled(Signal::SIGTERM)
    );
    assert!(
        f.console.contents().contains("got TERM"),
        "{}",
        f.console.contents()
    );
}

#[test]
fn a_command_that_ignores_the_signal_is_killed_after_the_grace_period() {
    let mut f = runner_with(None, &[]);
    let cancel = f.runner.cancellation().clone();
    cancel.cancel(Signal::SIGTERM);
    // Already cancelled: nothing runs at all.
    let result = f.runner.run_stage(Stage::Test, &[shell("echo never")]);
    assert!(result.commands.is_empty());

    let mut f = runner_with(None, &[]);
    let cancel = f.runner.cancellation().clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        cancel.cancel(Signal::SIGTERM);
    });
    let started = Instant::now();
    let result = f
        .runner
        .run_stage(Stage::Test, &[shell("trap '' TERM; sleep 30")]);
    assert_eq!(
        result.commands[0].finish,
        Finish::Cancelled(Signal::SIGTERM)
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the grace period did not end the command"
    );
}

#[test]
fn secrets_are_masked_in_command_output_and_headers() {
    let mut f = runner_with(None, &["s3cr3t-value"]);
    let result = f
        .runner
        .run_stage(Stage::Test, &[shell("echo the value is s3cr3t-value")]);
    assert!(result.passed());
    let out = f.console.contents();
    assert!(!out.contains("s3cr3t-value"), "{out}");
    assert!(
        out.contains("==> [test 1/1] echo the value is ***"),
        "{out}"
    );
    assert!(out.contains("the value is ***\n"), "{out}");
}

#[test]
fn a_missing_program_fails_with_a_clear_message() {
    let mut f = runner_with(None, &[]);
    let result = f.runner.run_stage(
        Stage::Setup,
        &[command(Run::Exec(vec![
            "definitely-not-installed-xyz".into()
        ]))],
    );
    assert!(
        matches!(&result.commands[0].finish, Finish::SpawnFailed(why) if why.contains("not found"))
    );
    assert!(f
        .console
        .contents()
        .contains("`definitely-not-installed-xyz` not found"));
}

#[test]
fn shell_form_without_a_shell_runs_split_words() {
    let f = runner_with(None, &[]);
    let runner = f.runner.with_shell(false);
    assert_eq!(
        runner.argv(&Run::Shell("echo hi there".into())).unwrap(),
        ["echo", "hi", "there"]
    );
    let runner = runner.with_shell(true);
    assert_eq!(
        runner.argv(&Run::Shell("echo hi".into())).unwrap(),
        [SHELL, "-ec", "echo hi"]
    );
}

#[test]
fn durations_read_naturally() {
    assert_eq!(format_duration(Duration::from_millis(850)), "850ms");
    assert_eq!(format_duration(Duration::from_millis(4200)), "4.2s");
    assert_eq!(format_duration(Duration::from_secs(72)), "1m12s");
    assert_eq!(format_duration(Duration::from_secs(3780)), "1h3m");
}

#[test]
fn a_relative_program_is_found_in_the_commands_workdir() {
    let mut f = runner_with(None, &[]);
    let sub = f._dir.path().join("tools");
    std::fs::create_dir_all(&sub).unwrap();
    let script = sub.join("hello.sh");
    std::fs::write(&script, "#!/bin/sh\necho hello from tools\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cmd = command(Run::Exec(vec!["./hello.sh".into()]));
    cmd.workdir = Some("tools".into());
    let result = f.runner.run_stage(Stage::Test, &[cmd]);
    assert!(result.passed(), "{result:?}");
    assert!(f.console.contents().contains("hello from tools"));
}
