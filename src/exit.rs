//! The exit codes of both binaries, in one table (README, "Exit codes"):
//! a launcher that waits for a build exits with the build's own code.

use nix::sys::signal::Signal;

/// The build passed (or the command did what was asked).
pub const PASSED: u8 = 0;
/// The build ran and failed: a command failed or timed out.
pub const FAILED: u8 = 1;
/// Bad input: an invalid `.forge.yml`, environment, flag or event.
pub const INVALID: u8 = 2;
/// Infrastructure: the forge, the artifact store, Docker, the file system.
pub const INFRASTRUCTURE: u8 = 3;
/// The build passed, but its final status could not be posted: whoever
/// watches the container (`forge-launch serve`) may still post `success`.
pub const UNPOSTED: u8 = 4;

/// The code of a build cancelled by `signal`: 128 + its number, as a shell
/// reports a process killed by it.
pub fn cancelled(signal: Signal) -> u8 {
    from_raw_signal(signal as i32)
}

/// 128 + a raw signal number (a child may die of a real-time signal that
/// has no [`Signal`] name), clamped to a byte.
pub fn from_raw_signal(signal: i32) -> u8 {
    u8::try_from(128 + signal.clamp(0, 127)).unwrap_or(u8::MAX)
}

/// A container's exit code as this process's: the same when it fits in a
/// byte, else an infrastructure failure (Docker reports -1 for a container
/// it lost track of).
pub fn from_container(code: i64) -> u8 {
    u8::try_from(code).unwrap_or(INFRASTRUCTURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_128_plus_their_number() {
        assert_eq!(cancelled(Signal::SIGTERM), 143);
        assert_eq!(cancelled(Signal::SIGINT), 130);
        assert_eq!(from_raw_signal(9), 137);
        assert_eq!(from_raw_signal(64), 192);
    }

    #[test]
    fn container_codes_pass_through_and_clamp() {
        assert_eq!(from_container(1), 1);
        assert_eq!(from_container(137), 137);
        assert_eq!(from_container(-1), INFRASTRUCTURE);
        assert_eq!(from_container(256), INFRASTRUCTURE);
    }
}
