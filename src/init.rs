//! PID 1 duties. Run as a container's command, forgexec is PID 1: the kernel
//! gives it every orphaned process to reap and delivers no signal it has not
//! asked for. So forgexec splits in two at start-up: a tiny init (this
//! module) that reaps zombies, forwards termination signals to the build
//! process, and when the build process exits kills whatever is left in the
//! container, and the build process itself, which runs the build's commands as
//! usual. Also here: marking the process non-dumpable so that build commands
//! running as the same user cannot read its memory or environment.

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// Signals the init forwards to the build process.
pub(crate) const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Makes `/proc/self/mem`, `/proc/self/environ` and ptrace unavailable to
/// other processes of the same user that lack CAP_SYS_PTRACE: the token
/// lives in this process's memory.
pub fn make_non_dumpable() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_DUMPABLE takes plain integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// When this process is PID 1, forks: the parent becomes the init and never
/// returns (it exits with the build's exit code); the child returns and runs
/// the build. Must be called before any thread is started.
pub fn split_if_pid1() -> std::io::Result<()> {
    if std::process::id() != 1 || std::env::var_os("FORGEXEC_NO_INIT").is_some() {
        return Ok(());
    }
    let mut watched = SigSet::empty();
    watched.add(Signal::SIGCHLD);
    for signal in FORWARDED {
        watched.add(signal);
    }
    let mut previous = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&watched), Some(&mut previous))?;
    // SAFETY: no other thread exists yet (documented precondition), so the
    // child may run arbitrary code after fork.
    match unsafe { fork() }? {
        ForkResult::Child => {
            nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&previous), None)?;
            Ok(())
        }
        ForkResult::Parent { child } => {
            let code = supervise(child, &watched);
            std::process::exit(code)
        }
    }
}

/// The init loop: forward signals, reap everything, and when the build
/// process is gone, kill and reap what remains.
fn supervise(build: Pid, watched: &SigSet) -> i32 {
    let mut exit_code = None;
    loop {
        match watched.wait() {
            Ok(Signal::SIGCHLD) => {
                if let Some(code) = reap(build) {
                    exit_code = Some(code);
                }
            }
            Ok(signal) => {
                let _ = kill(build, signal);
            }
            Err(_) => {}
        }
        if let Some(code) = exit_code {
            // Nothing of the build may outlive it: as PID 1, kill(-1) reaches
            // every other process in the container.
            let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
            while waitpid(None, None).is_ok() {}
            return code;
        }
    }
}

/// Reaps every exited child; returns the build process's exit code if it
/// was among them.
fn reap(build: Pid) -> Option<i32> {
    let mut build_code = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == build => build_code = Some(code),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == build => {
                build_code = Some(128 + signal as i32)
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return build_code,
            Ok(_) => {}
        }
    }
}
