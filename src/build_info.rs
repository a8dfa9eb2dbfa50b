//! What this binary was built from (set by `build.rs`): version, git commit, build date. Used
//! by `--version` and the `dirsync_build_info` metric.

/// The crate version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The short git commit, with `-dirty` when tracked files had changes; `unknown` when not
/// built from a git checkout.
pub const COMMIT: &str = env!("DIRSYNC_GIT_COMMIT");

/// The build date (UTC, `YYYY-MM-DD`).
pub const BUILD_DATE: &str = env!("DIRSYNC_BUILD_DATE");

/// `--version`'s text: `0.1.0 (commit 1a2b3c4, built 2026-12-03)`.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("DIRSYNC_GIT_COMMIT"),
    ", built ",
    env!("DIRSYNC_BUILD_DATE"),
    ")"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_line_names_version_commit_and_date() {
        assert!(VERSION_LINE.starts_with(VERSION));
        assert!(VERSION_LINE.contains(COMMIT));
        assert!(VERSION_LINE.contains(BUILD_DATE));
        assert!(!COMMIT.is_empty());
        let date: Vec<&str> = BUILD_DATE.split('-').collect();
        assert_eq!(date.len(), 3, "{BUILD_DATE}");
        assert!(date.iter().all(|p| p.chars().all(|c| c.is_ascii_digit())));
    }
}
