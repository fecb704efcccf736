//! `berth completion bash|zsh|fish`

use clap::CommandFactory;

use crate::exit::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Shell to generate completions for.
    shell: clap_complete::Shell,
}

pub fn run(args: Args) -> Outcome {
    let mut command = crate::Cli::command();
    clap_complete::generate(args.shell, &mut command, "berth", &mut std::io::stdout());
    Ok(())
}
