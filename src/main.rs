//! The `dirsync` binary: everything lives in the library; see `dirsync::cli`.

fn main() -> std::process::ExitCode {
    dirsync::cli::main()
}
