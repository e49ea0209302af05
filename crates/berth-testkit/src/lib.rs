//! Dev-only fixtures for Berth's tests: PostgreSQL test databases, a real OpenSSH `sshd`, and
//! helpers shared by test suites. Never a dependency of production code.
//!
//! Under `CI=true` a missing prerequisite (sshd, PostgreSQL, bwrap, Chromium) is an error that
//! fails the test; elsewhere tests may skip with a loud message via [`require`].

pub mod browser;
pub mod model_api;
pub mod netns;
pub mod pg;
pub mod sshd;

/// True when running in CI (`CI=true`), where missing prerequisites must fail tests.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Decide what to do about a missing prerequisite: in CI return an error (the caller fails the
/// test with it); elsewhere print why the test is skipped and return `Ok(false)`.
pub fn require(what: &str, available: bool) -> anyhow::Result<bool> {
    if available {
        return Ok(true);
    }
    if in_ci() {
        anyhow::bail!("{what} is required under CI=true but is not available");
    }
    eprintln!("SKIPPING: {what} is not available on this machine");
    Ok(false)
}
