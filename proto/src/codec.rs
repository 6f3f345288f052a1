//! The protobuf codec of cairn's internal services.
//!
//! It differs from tonic's own in one way: a request body that does not decode is
//! the caller's mistake, so it is answered with `INVALID_ARGUMENT` and says so,
//! where tonic would answer `INTERNAL`.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Protobuf codec that reports undecodable messages as `INVALID_ARGUMENT`.
#[derive(Debug)]
pub(crate) struct StrictCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = StrictEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        StrictEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(PhantomData)
    }
}

/// Encodes with prost.
#[derive(Debug)]
pub(crate) struct StrictEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for StrictEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|error| Status::internal(format!("cannot encode message: {error}")))
    }
}

/// Decodes with prost; a failure is `INVALID_ARGUMENT`.
#[derive(Debug)]
pub(crate) struct StrictDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf)
            .map(Some)
            .map_err(|error| Status::invalid_argument(format!("malformed message: {error}")))
    }
}
