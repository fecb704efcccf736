//! Per-layer progress of pull, push and load, like Docker: one bar per layer on a
//! terminal (each ending as one plain line), plain status lines otherwise, nothing when
//! quiet.

use std::collections::HashMap;
use std::io::IsTerminal;

use berth_proto::images::v1::{LayerProgress, LayerStatus};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

fn short(digest: &str) -> String {
    digest.trim_start_matches("sha256:").chars().take(12).collect()
}

fn status_text(status: LayerStatus, source: &str) -> String {
    match status {
        LayerStatus::Waiting => "Waiting",
        LayerStatus::Downloading => "Downloading",
        LayerStatus::Verifying => "Verifying Checksum",
        LayerStatus::DownloadComplete => "Download complete",
        LayerStatus::Extracting => "Extracting",
        LayerStatus::PullComplete => "Pull complete",
        LayerStatus::AlreadyExists => "Already exists",
        LayerStatus::Preparing => "Preparing",
        LayerStatus::Pushing => "Pushing",
        LayerStatus::Pushed => "Pushed",
        LayerStatus::Mounted => return format!("Mounted from {source}"),
        LayerStatus::Unspecified => "Pulling fs layer",
    }
    .to_string()
}

/// Docker says "Layer already exists" when pushing and "Already exists" when pulling.
fn text(status: LayerStatus, source: &str, pushing: bool) -> String {
    if pushing && status == LayerStatus::AlreadyExists {
        return "Layer already exists".into();
    }
    status_text(status, source)
}

fn is_final(status: LayerStatus) -> bool {
    matches!(
        status,
        LayerStatus::PullComplete | LayerStatus::AlreadyExists | LayerStatus::Pushed | LayerStatus::Mounted
    )
}

pub enum Display {
    Quiet,
    Plain {
        pushing: bool,
        last: HashMap<String, String>,
    },
    /// The bars, and each layer's last status in arrival order (printed plainly at the end).
    Bars {
        pushing: bool,
        multi: MultiProgress,
        bars: HashMap<String, ProgressBar>,
        order: Vec<(String, String)>,
    },
}

impl Display {
    pub fn new(quiet: bool) -> Display {
        Display::with_mode(quiet, false)
    }

    pub fn pushing(quiet: bool) -> Display {
        Display::with_mode(quiet, true)
    }

    fn with_mode(quiet: bool, pushing: bool) -> Display {
        if quiet {
            Display::Quiet
        } else if std::io::stdout().is_terminal() {
            Display::Bars { pushing, multi: MultiProgress::new(), bars: HashMap::new(), order: Vec::new() }
        } else {
            Display::Plain { pushing, last: HashMap::new() }
        }
    }

    pub fn layer(&mut self, layer: &LayerProgress) {
        let status = LayerStatus::try_from(layer.status).unwrap_or(LayerStatus::Unspecified);
        let id = short(&layer.digest);
        match self {
            Display::Quiet => {}
            Display::Plain { pushing, last } => {
                let line = text(status, &layer.source, *pushing);
                if last.get(&id) != Some(&line) {
                    println!("{id}: {line}");
                    last.insert(id, line);
                }
            }
            Display::Bars { pushing, multi, bars, order } => {
                let line = text(status, &layer.source, *pushing);
                match order.iter_mut().find(|(layer, _)| *layer == id) {
                    Some(entry) => entry.1 = line.clone(),
                    None => order.push((id.clone(), line.clone())),
                }
                let bar = bars.entry(id.clone()).or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new(layer.total.max(0) as u64));
                    bar.set_style(
                        ProgressStyle::with_template("{prefix}: {msg:<18} {wide_bar:.cyan/blue} {bytes}/{total_bytes}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                    );
                    bar.set_prefix(id.clone());
                    bar
                });
                bar.set_message(line);
                bar.set_length(layer.total.max(0) as u64);
                match status {
                    LayerStatus::Downloading | LayerStatus::Extracting | LayerStatus::Pushing => {
                        bar.set_position(layer.current.max(0) as u64)
                    }
                    LayerStatus::DownloadComplete => bar.set_position(layer.total.max(0) as u64),
                    status if is_final(status) => bar.set_position(layer.total.max(0) as u64),
                    _ => {}
                }
                if is_final(status) {
                    bar.finish();
                }
            }
        }
    }

    pub fn line(&self, text: &str) {
        match self {
            Display::Quiet => {}
            Display::Plain { .. } => println!("{text}"),
            Display::Bars { multi, .. } => {
                let _ = multi.println(text);
            }
        }
    }

    /// Like docker, each layer ends as one plain line.
    pub fn finish(&mut self) {
        if let Display::Bars { multi, order, bars, .. } = self {
            let _ = multi.clear();
            for (id, line) in order.drain(..) {
                println!("{id}: {line}");
            }
            bars.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_pull_wording() {
        assert_eq!(text(LayerStatus::AlreadyExists, "", true), "Layer already exists");
        assert_eq!(text(LayerStatus::AlreadyExists, "", false), "Already exists");
        assert_eq!(text(LayerStatus::Mounted, "library/busybox", true), "Mounted from library/busybox");
        assert_eq!(short("sha256:0123456789abcdef"), "0123456789ab");
    }
}
