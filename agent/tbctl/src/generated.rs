//! Shell completions and the man page, generated from the clap definitions (never written by
//! hand, so they cannot drift from the flags). The Nix package and the Ansible role run these
//! hidden commands of the installed binary and install what they print (`man --dir` writes
//! the page of every command, as git's tbctl-status(1) style needs).

use std::io::Write;
use std::path::PathBuf;
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

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write one page per command into DIR (tbctl.1, tbctl-status.1, ...: the pages tbctl.1
    /// refers to) instead of printing tbctl.1.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn man_page<C: CommandFactory>(args: &ManArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.dir {
        clap_mangen::generate_to(C::command(), dir).map_err(|error| {
            anyhow::anyhow!("writing man pages into {}: {error}", dir.display())
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(C::command()).render(&mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
