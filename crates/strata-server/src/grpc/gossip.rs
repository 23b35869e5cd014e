//! `event_store.client.gossip.Gossip`: cluster discovery. A strata server is a cluster
//! of one node, always the leader, so clients that discover (`esdb+discover://`,
//! `kurrentdb+discover://`) pick it.

use std::time::{SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status};

use crate::grpc::convert;
use crate::proto::event_store::client::gossip::gossip_server::Gossip;
use crate::proto::event_store::client::gossip::member_info::VNodeState;
use crate::proto::event_store::client::gossip::{ClusterInfo, EndPoint, MemberInfo};
use crate::proto::event_store::client::Empty;
use crate::state::ServerState;

/// The `Gossip` service.
#[derive(Clone, Debug)]
pub struct GossipService {
    state: ServerState,
    instance_id: uuid::Uuid,
}

impl GossipService {
    /// The service for the server over `state`.
    pub fn new(state: ServerState) -> GossipService {
        GossipService {
            state,
            instance_id: uuid::Uuid::new_v4(),
        }
    }
}

#[tonic::async_trait]
impl Gossip for GossipService {
    async fn read(&self, _request: Request<Empty>) -> Result<Response<ClusterInfo>, Status> {
        // Clients connect to the advertised gRPC endpoint.
        let (address, port) = match self.state.options.grpc {
            Some(addr) => (addr.ip().to_string(), u32::from(addr.port())),
            None => (String::new(), 0),
        };
        let ticks = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos() / 100).unwrap_or(i64::MAX));
        Ok(Response::new(ClusterInfo {
            members: vec![MemberInfo {
                instance_id: Some(convert::uuid_string(self.instance_id)),
                time_stamp: ticks,
                state: VNodeState::Leader as i32,
                is_alive: true,
                http_end_point: Some(EndPoint { address, port }),
            }],
        }))
    }
}
