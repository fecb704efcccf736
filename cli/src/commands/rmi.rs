//! `berth rmi IMAGE...` (and `berth image rm`): prints what was untagged and deleted;
//! continues past failures and exits 1 if any image could not be removed.

use berth_proto::images::v1::DeleteImageRequest;

use crate::client::Connection;
use crate::exit::{Exit, GENERAL_FAILURE, Outcome};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Force removal of the image.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Do not delete untagged parents.
    #[arg(long)]
    pub no_prune: bool,
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    let mut failed = false;
    for image in &args.images {
        let request = DeleteImageRequest { reference: image.clone(), force: args.force, no_prune: args.no_prune };
        match connection.images().delete(request).await {
            Ok(response) => {
                let response = response.into_inner();
                for name in response.untagged {
                    println!("Untagged: {name}");
                }
                for id in response.deleted {
                    println!("Deleted: {id}");
                }
            }
            Err(status) => {
                eprintln!("Error response from daemon: {}", status.message());
                failed = true;
            }
        }
    }
    if failed { Err(Exit::status(i32::from(GENERAL_FAILURE))) } else { Ok(()) }
}
