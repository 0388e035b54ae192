//! The `kefu` binary: parses the command line and runs it.

fn main() -> std::process::ExitCode {
    kefu::cli::main()
}
