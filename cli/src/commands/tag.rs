//! `berth tag SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]`

use berth_proto::images::v1::TagImageRequest;

use crate::client::Connection;
use crate::exit::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub source: String,
    pub target: String,
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    connection
        .images()
        .tag(TagImageRequest { source: args.source, target: args.target })
        .await
        .map_err(anyhow::Error::from)?;
    Ok(())
}
