//! The `quiesce` binary's exit codes. CI scripts branch on these, so they never change meaning.
//!
//! A violated invariant, bad input and a broken environment are different outcomes: a red
//! build caused by a broker that did not start must not read as a bug in the service.

/// Every check passed (or, for `infra up`, the infrastructure ran and was stopped cleanly).
pub const OK: i32 = 0;
/// At least one invariant was violated: the service under test has a bug.
pub const VIOLATION: i32 = 1;
/// The input is wrong: an unknown flag, backend or check, a malformed file, a bad value.
pub const BAD_INPUT: i32 = 2;
/// The harness or the infrastructure failed: a dependency did not start or become ready, Docker
/// answered with an error, an image did not build. Says nothing about the service under test.
pub const INFRA_FAILED: i32 = 3;
/// Something the harness needs is not on this machine: a binary (`redis-server`, `tansu`), a
/// container image that cannot be pulled, a Docker daemon that does not answer.
pub const PREREQUISITE_MISSING: i32 = 4;
/// An address the harness was told to listen on is taken by another program.
pub const ADDRESS_IN_USE: i32 = 5;
/// No check failed, but at least one could not be decided (and was not allowed to be, with
/// `--allow-inconclusive` or the file's `allow_inconclusive`): the run proves nothing about
/// that check. A PASS (0) means every enabled check passed on evidence.
pub const INCONCLUSIVE: i32 = 6;
/// Interrupted by Ctrl-C (SIGINT) or SIGTERM; everything that was started has been stopped.
pub const INTERRUPTED: i32 = 130;

/// The table printed by `quiesce --help`.
pub const HELP: &str = "\
EXIT CODES:
    0    success
    1    an invariant was violated
    2    bad input (flag, backend, check, file or value)
    3    harness or infrastructure failure (not the target's fault)
    4    a prerequisite is missing (binary, image, Docker daemon)
    5    an address to listen on is already in use
    6    inconclusive: no check failed, but one could not be decided
    130  interrupted; everything started was stopped";
