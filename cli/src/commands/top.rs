//! `berth top CONTAINER [ps OPTIONS]`

use berth_proto::tasks::v1::TopRequest;

use crate::client::Connection;
use crate::exit::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    container: String,
    /// Options passed to ps (default -ef)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_args: Vec<String>,
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    let response = connection
        .tasks()
        .top(TopRequest { container_id: args.container, ps_args: args.ps_args })
        .await
        .map_err(anyhow::Error::from)?
        .into_inner();
    let titles: Vec<&str> = response.titles.iter().map(String::as_str).collect();
    let rows: Vec<Vec<String>> = response.processes.into_iter().map(|p| p.fields).collect();
    crate::output::print_table(&titles, &rows);
    Ok(())
}
