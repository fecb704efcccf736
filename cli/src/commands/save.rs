//! `berth save [-o FILE] IMAGE...`: one tar that `docker load`, skopeo
//! (`docker-archive:`, `oci-archive:`) and `berth load` accept, streamed from the daemon.

use std::io::{IsTerminal, Write};

use anyhow::Context;
use berth_proto::images::v1::SaveRequest;
use futures::StreamExt;

use crate::client::Connection;
use crate::exit::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Images to save (names or ids).
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Write to a file, instead of STDOUT.
    #[arg(long, short = 'o')]
    pub output: Option<String>,
    /// Save only this platform of a multi-platform image (os/arch[/variant]).
    #[arg(long)]
    pub platform: Option<String>,
}

pub async fn run(args: Args, connection: Connection) -> Outcome {
    let to_stdout = args.output.as_deref().is_none_or(|o| o == "-");
    if to_stdout && std::io::stdout().is_terminal() {
        return Err(anyhow::anyhow!("Cowardly refusing to save to a terminal. Use the -o flag or redirect").into());
    }
    let request = SaveRequest {
        references: args.images.clone(),
        platform: args.platform.as_deref().map(super::pull::parse_platform).transpose()?,
    };
    let mut stream = connection.images().save(request).await.map_err(anyhow::Error::from)?.into_inner();
    // A file appears only complete: written beside its name, renamed at the end.
    let (mut out, partial): (Box<dyn Write>, Option<(std::path::PathBuf, std::path::PathBuf)>) = match &args.output {
        Some(path) if !to_stdout => {
            let path = std::path::PathBuf::from(path);
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let temp = path.with_file_name(format!(".{name}.partial-{}", std::process::id()));
            let file = std::fs::File::create(&temp).with_context(|| format!("creating {}", temp.display()))?;
            (Box::new(std::io::BufWriter::new(file)), Some((temp, path)))
        }
        _ => (Box::new(std::io::stdout().lock()), None),
    };
    let written = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(anyhow::Error::from)?;
            out.write_all(&chunk.data).context("writing the archive")?;
        }
        out.flush().context("writing the archive")?;
        anyhow::Ok(())
    }
    .await;
    drop(out);
    match (written, partial) {
        (Ok(()), Some((temp, path))) => {
            std::fs::rename(&temp, &path).with_context(|| format!("writing {}", path.display()))?;
            Ok(())
        }
        (Ok(()), None) => Ok(()),
        (Err(err), partial) => {
            if let Some((temp, _)) = partial {
                let _ = std::fs::remove_file(temp);
            }
            Err(err.into())
        }
    }
}
