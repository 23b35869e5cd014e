//! The gRPC API, wire-compatible with KurrentDB/EventStoreDB clients: one file per
//! service, plus the conversions between protocol and strata types.

pub mod convert;
pub mod features;
pub mod gossip;

use tonic::transport::server::Router;

use crate::proto::event_store::client::gossip::gossip_server::GossipServer;
use crate::proto::event_store::client::server_features::server_features_server::ServerFeaturesServer;
use crate::state::ServerState;

/// The gRPC services over `state`, ready to serve.
pub fn router(state: ServerState) -> Router {
    tonic::transport::Server::builder()
        .add_service(ServerFeaturesServer::new(features::FeaturesService))
        .add_service(GossipServer::new(gossip::GossipService::new(state)))
}
