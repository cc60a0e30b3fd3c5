//! Thin entry point: parse arguments, run the library, turn the outcome into an exit code.
fn main() -> std::process::ExitCode {
    kfd_audit::app::main()
}
