//! Image archives: `Save` writes docker-archive + OCI layout tars, `Load` reads either.

pub mod load;
mod plan;
mod read;
pub mod save;

use berth_proto::images::v1::LoadRequest;
use berth_proto::images::v1::load_request::Payload;
use bytes::Bytes;
use futures::StreamExt;

use crate::import::ByteStream;

/// The LoadRequest stream after its first (options) message, as bytes.
pub fn data_stream(stream: tonic::Streaming<LoadRequest>) -> ByteStream {
    Box::pin(stream.filter_map(|message| async move {
        match message {
            Ok(request) => match request.payload {
                Some(Payload::Data(data)) => Some(Ok(Bytes::from(data))),
                Some(Payload::Options(_)) => Some(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "a second LoadOptions arrived in the middle of the data",
                ))),
                None => None,
            },
            Err(status) => Some(Err(std::io::Error::other(format!("the client stream failed: {}", status.message())))),
        }
    }))
}
