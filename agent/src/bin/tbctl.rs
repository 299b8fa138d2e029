//! tbctl: see `tb_agent::tbctl`.

fn main() -> std::process::ExitCode {
    tb_agent::tbctl::main()
}
