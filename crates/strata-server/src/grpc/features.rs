//! `event_store.client.server_features.ServerFeatures`: tells clients which calls this
//! server answers, so they choose them (batch append, persistent subscriptions to
//! `$all`, …) instead of guessing from a version number.

use tonic::{Request, Response, Status};

use crate::proto::event_store::client::server_features::server_features_server::ServerFeatures;
use crate::proto::event_store::client::server_features::{SupportedMethod, SupportedMethods};
use crate::proto::event_store::client::Empty;

/// The KurrentDB server version strata presents itself as. Clients compare it to
/// decide on behaviours that are not advertised as methods; 24.10 is the release whose
/// v1 API strata implements.
pub const COMPATIBLE_SERVER_VERSION: &str = "24.10.0";

const STREAMS: &str = "event_store.client.streams.streams";
const PERSISTENT: &str = "event_store.client.persistent_subscriptions.persistentsubscriptions";
const GOSSIP: &str = "event_store.client.gossip.gossip";
const FEATURES: &str = "event_store.client.server_features.serverfeatures";
const USERS: &str = "event_store.client.users.users";
const V2_STREAMS: &str = "kurrentdb.protocol.v2.streams.streamsservice";

/// Every method strata serves: `(service, method, features)`, lower-cased as
/// KurrentDB reports them.
pub const SUPPORTED: &[(&str, &str, &[&str])] = &[
    (STREAMS, "read", &["position", "events"]),
    (STREAMS, "append", &[]),
    (STREAMS, "batchappend", &[]),
    (STREAMS, "delete", &[]),
    (STREAMS, "tombstone", &[]),
    (PERSISTENT, "create", &["stream", "all"]),
    (PERSISTENT, "update", &["stream", "all"]),
    (PERSISTENT, "delete", &["stream", "all"]),
    (PERSISTENT, "read", &["stream", "all"]),
    (PERSISTENT, "getinfo", &["stream", "all"]),
    (PERSISTENT, "replayparked", &["stream", "all"]),
    (PERSISTENT, "list", &["stream", "all"]),
    (PERSISTENT, "restartsubsystem", &[]),
    (GOSSIP, "read", &[]),
    (USERS, "create", &[]),
    (USERS, "update", &[]),
    (USERS, "delete", &[]),
    (USERS, "disable", &[]),
    (USERS, "enable", &[]),
    (USERS, "details", &[]),
    (USERS, "changepassword", &[]),
    (USERS, "resetpassword", &[]),
    (FEATURES, "getsupportedmethods", &[]),
    (V2_STREAMS, "appendsession", &[]),
    (V2_STREAMS, "appendrecords", &[]),
];

/// The `ServerFeatures` service.
#[derive(Clone, Copy, Debug, Default)]
pub struct FeaturesService;

#[tonic::async_trait]
impl ServerFeatures for FeaturesService {
    async fn get_supported_methods(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<SupportedMethods>, Status> {
        let methods = SUPPORTED
            .iter()
            .map(|(service, method, features)| SupportedMethod {
                method_name: (*method).to_owned(),
                service_name: (*service).to_owned(),
                features: features.iter().map(|f| (*f).to_owned()).collect(),
            })
            .collect();
        Ok(Response::new(SupportedMethods {
            methods,
            event_store_server_version: COMPATIBLE_SERVER_VERSION.to_owned(),
        }))
    }
}
