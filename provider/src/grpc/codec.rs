//! The protobuf codec of the provider API: prost, and once a message is encoded its secret
//! fields are zeroized (file contents of a reply, `attributes` and `secrets` of a request).
//!
//! The encoded bytes themselves live in tonic's and hyper's buffers until they are written to the
//! socket; those buffers are freed without zeroizing (see RELIABILITY.md).

use crate::v1alpha1::{MountRequest, MountResponse, VersionRequest, VersionResponse};
use prost::Message;
use std::marker::PhantomData;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, EncodeBuf, Encoder},
};
use tonic_prost::ProstDecoder;
use zeroize::Zeroize;

/// Wipes the fields of a message that can hold secrets.
pub trait Scrub {
    /// Zeroizes secret-bearing fields in place.
    fn scrub(&mut self);
}

impl Scrub for MountResponse {
    fn scrub(&mut self) {
        for file in &mut self.files {
            file.contents.zeroize();
        }
    }
}

impl Scrub for MountRequest {
    fn scrub(&mut self) {
        // `attributes` carries service-account tokens, `secrets` the node-publish secret.
        self.attributes.zeroize();
        self.secrets.zeroize();
    }
}

impl Scrub for VersionRequest {
    fn scrub(&mut self) {}
}

impl Scrub for VersionResponse {
    fn scrub(&mut self) {}
}

/// Prost encoding and decoding; encoded messages are scrubbed before they are dropped.
#[derive(Debug)]
pub struct ScrubbingCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ScrubbingCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for ScrubbingCodec<T, U>
where
    T: Message + Scrub + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ScrubbingEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ScrubbingEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}

/// Encodes with prost, then scrubs the message.
#[derive(Debug)]
pub struct ScrubbingEncoder<T>(PhantomData<T>);

impl<T: Message + Scrub> Encoder for ScrubbingEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, mut item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        let result = item
            .encode(buf)
            .map_err(|e| Status::internal(format!("encoding the reply failed: {e}")));
        item.scrub();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1alpha1::File;

    #[test]
    fn scrub_wipes_secret_fields_only() {
        let mut reply = MountResponse {
            files: vec![File {
                path: "db".into(),
                mode: 0o644,
                contents: b"hunter2".to_vec(),
            }],
            ..MountResponse::default()
        };
        reply.scrub();
        assert_eq!(reply.files[0].path, "db");
        assert!(reply.files[0].contents.is_empty());
        let mut request = MountRequest {
            attributes: "{\"token\":\"x\"}".into(),
            secrets: "{\"clientsecret\":\"y\"}".into(),
            target_path: "/t".into(),
            ..MountRequest::default()
        };
        request.scrub();
        assert!(request.attributes.is_empty() && request.secrets.is_empty());
        assert_eq!(request.target_path, "/t");
    }
}
