//! The protocol types and service traits generated from `proto/` at build time.
//!
//! The module tree mirrors the protobuf packages, so a type's path reads like its
//! protobuf name: `event_store.client.streams.ReadReq` is
//! `proto::event_store::client::streams::ReadReq`.

#![allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]

/// Packages under `event_store.client` (the v1 API the clients connect to).
pub mod event_store {
    /// `event_store.client`: shared types.
    pub mod client {
        include!(concat!(env!("OUT_DIR"), "/event_store.client.rs"));

        /// `event_store.client.streams`.
        pub mod streams {
            include!(concat!(env!("OUT_DIR"), "/event_store.client.streams.rs"));
        }
        /// `event_store.client.persistent_subscriptions`.
        pub mod persistent_subscriptions {
            include!(concat!(
                env!("OUT_DIR"),
                "/event_store.client.persistent_subscriptions.rs"
            ));
        }
        /// `event_store.client.gossip`.
        pub mod gossip {
            include!(concat!(env!("OUT_DIR"), "/event_store.client.gossip.rs"));
        }
        /// `event_store.client.users`.
        pub mod users {
            include!(concat!(env!("OUT_DIR"), "/event_store.client.users.rs"));
        }
        /// `event_store.client.server_features`.
        pub mod server_features {
            include!(concat!(
                env!("OUT_DIR"),
                "/event_store.client.server_features.rs"
            ));
        }
    }
}

/// `google.rpc`: status codes and the rich error status.
pub mod google {
    /// `google.rpc`.
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

/// `kurrentdb.protocol.v2`: the newer multi-stream append.
pub mod kurrentdb {
    /// `kurrentdb.protocol`.
    pub mod protocol {
        /// `kurrentdb.protocol.v2`.
        pub mod v2 {
            /// `kurrentdb.protocol.v2.streams`.
            pub mod streams {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/kurrentdb.protocol.v2.streams.rs"
                ));

                /// `kurrentdb.protocol.v2.streams.errors`.
                pub mod errors {
                    include!(concat!(
                        env!("OUT_DIR"),
                        "/kurrentdb.protocol.v2.streams.errors.rs"
                    ));
                }
            }
        }
    }
}

/// `kurrent.rpc`: server errors of the v2 services.
pub mod kurrent {
    /// `kurrent.rpc`.
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/kurrent.rpc.rs"));
    }
}
