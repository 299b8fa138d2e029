//! tbctl: see the `tbctl` library crate.

fn main() -> std::process::ExitCode {
    tbctl::main()
}
