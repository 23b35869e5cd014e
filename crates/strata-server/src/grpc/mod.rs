//! The gRPC API, wire-compatible with KurrentDB/EventStoreDB clients: one file per
//! service, plus the conversions between protocol and strata types.

pub mod auth;
pub mod convert;
pub mod features;
pub mod gossip;
pub mod persistent;
pub mod requests;
pub mod streams;
pub mod users;
pub mod v2;

use tonic::transport::server::Router;
use tower_layer::Stack;

use crate::proto::event_store::client::gossip::gossip_server::GossipServer;
use crate::proto::event_store::client::persistent_subscriptions::persistent_subscriptions_server::PersistentSubscriptionsServer;
use crate::proto::event_store::client::server_features::server_features_server::ServerFeaturesServer;
use crate::proto::event_store::client::streams::streams_server::StreamsServer;
use crate::proto::event_store::client::users::users_server::UsersServer;
use crate::proto::kurrentdb::protocol::v2::streams::streams_service_server::StreamsServiceServer;
use crate::state::ServerState;

/// The gRPC services over `state`, behind the authentication layer, ready to serve.
pub fn router(state: ServerState) -> Router<Stack<auth::AuthLayer, tower_layer::Identity>> {
    let options = &state.options;
    let max = options.max_grpc_message;
    let mut builder = tonic::transport::Server::builder()
        // TCP_NODELAY is set on every accepted socket by `net::Acceptor`: tonic's own
        // setting only applies to listeners it binds itself.
        .max_concurrent_streams(options.grpc_max_concurrent_streams)
        .http2_keepalive_interval(Some(options.grpc_keepalive_interval))
        .http2_keepalive_timeout(Some(options.grpc_keepalive_timeout))
        .http2_max_pending_accept_reset_streams(Some(options.grpc_max_pending_reset_streams));
    if let Some(age) = options.grpc_max_connection_age {
        builder = builder
            .max_connection_age(age)
            .max_connection_age_grace(options.shutdown_grace);
    }
    builder
        .layer(auth::AuthLayer::new(std::sync::Arc::clone(&state.auth)))
        .add_service(
            StreamsServer::new(streams::StreamsService::new(state.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            StreamsServiceServer::new(v2::V2StreamsService::new(state.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(ServerFeaturesServer::new(features::FeaturesService))
        .add_service(GossipServer::new(gossip::GossipService::new(state.clone())))
        .add_service(UsersServer::new(users::UsersService::new(state.clone())))
        .add_service(PersistentSubscriptionsServer::new(
            persistent::PersistentService::new(state),
        ))
}
