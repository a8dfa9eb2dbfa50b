//! `dirsync generate`: the man pages (dirsync(1), one page per command, dirsync.toml(5)) and
//! the bash, zsh and fish completions, generated from the command-line definitions. The files
//! under `dist/` are its output, kept current by a test.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// The configuration's page, written by hand (it documents the file, not the command line).
const CONFIG_PAGE: &str = include_str!("../../man/dirsync.toml.5");

/// The command as the generated files describe it: the package version only, so that the
/// files do not change with every commit.
fn command() -> clap::Command {
    Cli::command().version(env!("CARGO_PKG_VERSION"))
}

/// Writes `dirsync.1`, `dirsync-<command>.1` for each command and `dirsync.toml.5` into
/// `dir` (created if missing). Returns the files written.
pub fn man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(command(), dir)?;
    std::fs::write(dir.join("dirsync.toml.5"), CONFIG_PAGE)?;
    list(dir)
}

/// Writes the completions (`dirsync.bash`, `_dirsync` for zsh, `dirsync.fish`) into `dir`
/// (created if missing). Returns the files written.
pub fn completions(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut command(), "dirsync", dir)?;
    }
    list(dir)
}

fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?;
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The man pages and completions under `dist/` (packaged by `cargo deb`) are what the
    /// current command line generates. After changing the CLI, run
    /// `dirsync generate man dist/man && dirsync generate completions dist/completions`.
    #[test]
    fn dist_files_are_current() {
        let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist");
        let tmp = tempfile::tempdir().unwrap();
        for (name, written) in [
            ("man", man_pages(&tmp.path().join("man")).unwrap()),
            (
                "completions",
                completions(&tmp.path().join("completions")).unwrap(),
            ),
        ] {
            let names = |files: &[PathBuf]| -> Vec<String> {
                files
                    .iter()
                    .filter_map(|f| f.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .collect()
            };
            let committed = list(&dist.join(name)).unwrap();
            assert_eq!(
                names(&written),
                names(&committed),
                "dist/{name}: files differ; regenerate (see this test's docs)"
            );
            for (w, c) in written.iter().zip(&committed) {
                assert!(
                    std::fs::read(w).unwrap() == std::fs::read(c).unwrap(),
                    "{} is not current; regenerate (see this test's docs)",
                    c.display()
                );
            }
        }
        assert!(
            man_pages(&tmp.path().join("man"))
                .unwrap()
                .iter()
                .all(|f| !f.to_string_lossy().contains("generate")),
            "the hidden generate command has no page"
        );
    }
}
