//! One reporter per layer turns download and unpack state into Docker-like layer
//! progress events (Waiting, Downloading n/total, Verifying, Download complete,
//! Extracting n/total, Pull complete, Already exists).

use std::time::Duration;

use berth_proto::images::v1::{LayerProgress, LayerStatus, pull_progress};
use tokio::sync::watch;

use super::ProgressSender;
use super::download::{Download, DownloadState};
use super::unpack::UnpackState;

/// At most this often per layer while bytes move.
const INTERVAL: Duration = Duration::from_millis(100);

/// The status to show, its current byte count, and whether it is final.
fn view(
    download: &DownloadState,
    unpack: &UnpackState,
    no_unpack: bool,
    size: u64,
) -> Option<(LayerStatus, u64, bool)> {
    let no_unpack = no_unpack || unpack.skipped;
    if unpack.done {
        return Some(if unpack.existed && download.present {
            (LayerStatus::AlreadyExists, 0, true)
        } else {
            (LayerStatus::PullComplete, size, true)
        });
    }
    match &download.outcome {
        Some(Err(_)) => return None,
        Some(Ok(())) if download.present && no_unpack => return Some((LayerStatus::AlreadyExists, 0, true)),
        Some(Ok(())) if no_unpack => return Some((LayerStatus::DownloadComplete, size, true)),
        Some(Ok(())) if unpack.started => return Some((LayerStatus::Extracting, unpack.applied, false)),
        // Present already: nothing to say until unpacking shows whether it exists too.
        Some(Ok(())) if download.present => return Some((LayerStatus::Unspecified, 0, false)),
        Some(Ok(())) => return Some((LayerStatus::DownloadComplete, size, false)),
        None => {}
    }
    Some(if download.verifying {
        (LayerStatus::Verifying, download.written, false)
    } else if download.started {
        (LayerStatus::Downloading, download.written, false)
    } else {
        (LayerStatus::Waiting, 0, false)
    })
}

pub async fn report(
    download: Download,
    mut unpack: watch::Receiver<UnpackState>,
    no_unpack: bool,
    progress: ProgressSender,
) {
    let mut downloads = download.state.clone();
    let mut last: Option<(LayerStatus, u64)> = None;
    let mut download_open = true;
    loop {
        let download_state = downloads.borrow_and_update().clone();
        let unpack_state = unpack.borrow_and_update().clone();
        let Some((status, current, last_one)) = view(&download_state, &unpack_state, no_unpack, download.size) else {
            return;
        };
        if last != Some((status, current)) && status != LayerStatus::Unspecified {
            let event = LayerProgress {
                digest: download.digest.to_string(),
                status: status as i32,
                current: current as i64,
                total: download.size as i64,
                source: String::new(),
            };
            let _ = progress
                .send(Ok(berth_proto::images::v1::PullProgress { event: Some(pull_progress::Event::Layer(event)) }))
                .await;
            last = Some((status, current));
        }
        if last_one {
            return;
        }
        let moving = matches!(status, LayerStatus::Downloading | LayerStatus::Extracting);
        tokio::select! {
            changed = downloads.changed(), if download_open => {
                if changed.is_err() {
                    download_open = false;
                    if downloads.borrow().outcome.is_none() {
                        // The download task is gone without an outcome.
                        return;
                    }
                }
            }
            changed = unpack.changed() => if changed.is_err() { return },
        }
        if moving {
            tokio::time::sleep(INTERVAL).await;
        }
    }
}
