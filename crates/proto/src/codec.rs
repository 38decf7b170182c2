//! The codec every generated server uses: prost's, except that a request
//! which does not decode is the client's mistake, answered
//! `INVALID_ARGUMENT` with a `google.rpc.BadRequest` violation naming the
//! request, not `INTERNAL`.
//!
//! `tonic-prost` maps any decode error to `INTERNAL`, following the table
//! of grpc/doc/statuscodes.md; but `INTERNAL` tells a caller (and an
//! alert on the error rate) that the server broke, and a retry policy that
//! something transient happened. Bytes that are not the method's message
//! are neither: the project's rule is that a client's mistake is never
//! `INTERNAL`. The clients keep prost's codec (`build.rs` generates them
//! apart): a response that does not decode is the server's fault, and
//! `INTERNAL` is right there.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;
use tonic_types::{ErrorDetails, StatusExt as _};

/// prost's codec for servers, refusing undecodable requests as
/// `INVALID_ARGUMENT` (see the module docs).
#[derive(Debug, Clone)]
pub struct ServerCodec<T, U> {
    inner: ProstCodec<T, U>,
}

impl<T, U> Default for ServerCodec<T, U> {
    fn default() -> Self {
        Self {
            inner: ProstCodec::new(),
        }
    }
}

impl<T, U> Codec for ServerCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder {
            inner: ProstCodec::<T, U>::raw_decoder(BufferSettings::default()),
            _pd: PhantomData,
        }
    }
}

/// Decodes requests with prost; an undecodable one is `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct RequestDecoder<U> {
    inner: tonic_prost::ProstDecoder<U>,
    _pd: PhantomData<U>,
}

impl<U> Decoder for RequestDecoder<U>
where
    U: Message + Default,
{
    type Item = U;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner.decode(src).map_err(undecodable)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}

/// The answer to a request that prost could not decode.
fn undecodable(status: Status) -> Status {
    // prost's decoder fails only with decode errors (INTERNAL); anything
    // else is passed on as it is.
    if status.code() != Code::Internal {
        return status;
    }
    let why = format!(
        "the request body is not a valid protobuf message of this method's request type: {}",
        status.message()
    );
    Status::with_error_details(
        Code::InvalidArgument,
        why.clone(),
        ErrorDetails::with_bad_request_violation("request", why),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decode error becomes INVALID_ARGUMENT naming the request; other
    /// statuses pass through.
    #[test]
    fn decode_errors_are_the_clients() {
        let status = undecodable(Status::internal("invalid wire type value: 7"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("invalid wire type value: 7"));
        let details = status.get_error_details();
        let bad = details.bad_request().expect("BadRequest details");
        assert_eq!(bad.field_violations.len(), 1);
        assert_eq!(bad.field_violations[0].field, "request");
        let other = undecodable(Status::resource_exhausted("too big"));
        assert_eq!(other.code(), Code::ResourceExhausted);
    }
}
