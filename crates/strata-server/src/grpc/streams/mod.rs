//! `event_store.client.streams.Streams`: append, batch append, read and subscribe,
//! delete and tombstone — one file per call family.

mod append;
mod batch;
mod delete;
mod read;
mod wire;

use std::pin::Pin;

use futures_util::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::grpc::auth::Caller;
use crate::proto::event_store::client::streams::streams_server::Streams;
use crate::proto::event_store::client::streams::{
    AppendReq, AppendResp, BatchAppendReq, BatchAppendResp, DeleteReq, DeleteResp, ReadReq,
    ReadResp, TombstoneReq, TombstoneResp,
};
use crate::state::ServerState;

/// A stream of responses, as tonic wants it.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The `Streams` service.
#[derive(Clone, Debug)]
pub struct StreamsService {
    state: ServerState,
}

impl StreamsService {
    /// The service over `state`.
    pub fn new(state: ServerState) -> StreamsService {
        StreamsService { state }
    }
}

#[tonic::async_trait]
impl Streams for StreamsService {
    type ReadStream = ResponseStream<ReadResp>;
    type BatchAppendStream = ResponseStream<BatchAppendResp>;

    async fn read(&self, request: Request<ReadReq>) -> Result<Response<Self::ReadStream>, Status> {
        let caller = Caller::of(&request);
        let stream = read::read(self.state.clone(), caller, request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    async fn append(
        &self,
        request: Request<Streaming<AppendReq>>,
    ) -> Result<Response<AppendResp>, Status> {
        let caller = Caller::of(&request);
        append::append(&self.state, &caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        let caller = Caller::of(&request);
        delete::delete(&self.state, &caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn tombstone(
        &self,
        request: Request<TombstoneReq>,
    ) -> Result<Response<TombstoneResp>, Status> {
        let caller = Caller::of(&request);
        delete::tombstone(&self.state, &caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn batch_append(
        &self,
        request: Request<Streaming<BatchAppendReq>>,
    ) -> Result<Response<Self::BatchAppendStream>, Status> {
        let caller = Caller::of(&request);
        Ok(Response::new(batch::batch_append(
            self.state.clone(),
            caller,
            request.into_inner(),
        )))
    }
}
