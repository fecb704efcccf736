//! `berth push NAME[:TAG]`: like `docker push`, per-layer progress, then
//! `TAG: digest: sha256:… size: N` for each tag pushed.

use berth_proto::images::v1::{PushRequest, push_progress};
use futures::StreamExt;

use super::progress::Display;
use crate::client::Connection;
use crate::exit::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image to push: NAME[:TAG].
    pub image: String,
    /// Push all tags of the repository.
    #[arg(long, short = 'a')]
    pub all_tags: bool,
    /// Push only this platform's manifest of a multi-platform image (os/arch[/variant]).
    #[arg(long)]
    pub platform: Option<String>,
    /// Suppress verbose output.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    let request = PushRequest {
        reference: args.image.clone(),
        auth: super::pull::credentials(&args.image),
        all_tags: args.all_tags,
        platform: args.platform.as_deref().map(super::pull::parse_platform).transpose()?,
    };
    let mut display = Display::pushing(args.quiet);
    let mut stream = connection.images().push(request).await.map_err(anyhow::Error::from)?.into_inner();
    let mut pushed = Vec::new();
    while let Some(message) = stream.next().await {
        match message.map_err(anyhow::Error::from)?.event {
            Some(push_progress::Event::Layer(layer)) => display.layer(&layer),
            Some(push_progress::Event::Message(text)) => display.line(&text),
            Some(push_progress::Event::Done(done)) => {
                display.finish();
                if args.quiet {
                    pushed.push(done.name);
                } else {
                    println!("{}: digest: {} size: {}", done.tag, done.digest, done.size);
                }
            }
            None => {}
        }
    }
    display.finish();
    for name in pushed {
        println!("{}", super::pull::familiar(&name));
    }
    Ok(())
}
