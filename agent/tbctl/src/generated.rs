//! Shell completions and the man page, generated from the clap definitions (never written by
//! hand, so they cannot drift from the flags). The Nix package and the Ansible role run these
//! hidden commands of the installed binary and install what they print.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell whose completion script to print.
    #[arg(value_enum)]
    shell: Shell,
}

pub fn completions<C: CommandFactory>(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut command = C::command();
    let name = command.get_name().to_string();
    // Into memory first: clap_complete panics on a failed write (a closed pipe), this returns it.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, name, &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn man_page<C: CommandFactory>() -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(C::command()).render(&mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
