//! Reasons carried by `agent_disconnected` (and `customer_disconnected`)
//! before the server closes a socket.

use serde::{Deserialize, Serialize};

macro_rules! reasons {
    ($( $variant:ident = $wire:literal, $reconnect:literal, $doc:literal; )*) => {
        /// Every `agent_disconnected` reason of v3.5 and v3.6.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum DisconnectReason {
            $( #[serde(rename = $wire)] #[doc = $doc] $variant, )*
        }

        impl DisconnectReason {
            /// Every reason, in catalogue order.
            pub const ALL: &'static [DisconnectReason] = &[$(DisconnectReason::$variant,)*];

            /// Wire name.
            pub fn as_str(self) -> &'static str {
                match self { $(DisconnectReason::$variant => $wire,)* }
            }

            /// Whether the vendor tells clients to reconnect after this reason.
            pub fn should_reconnect(self) -> bool {
                match self { $(DisconnectReason::$variant => $reconnect,)* }
            }
        }
    };
}

reasons! {
    AgentDisconnectedByServer = "agent_disconnected_by_server", false, "the server disconnected the agent";
    AgentLoggedOutRemotely = "agent_logged_out_remotely", false, "logged out from another connection";
    AccessTokenRevoked = "access_token_revoked", false, "the token was revoked";
    AccessTokenExpired = "access_token_expired", true, "the token lifetime elapsed";
    ConnectionEvicted = "connection_evicted", false, "replaced by a newer connection over the connection limit";
    ConnectionTimeout = "connection_timeout", true, "no login, no traffic, or the client could not keep up";
    InternalError = "internal_error", true, "internal error";
    LicenseExpired = "license_expired", false, "the license expired";
    LicenseNotFound = "license_not_found", false, "the license does not exist";
    MisdirectedConnection = "misdirected_connection", false, "wrong region";
    UnsupportedVersion = "unsupported_version", false, "unsupported protocol version";
    TooManyConnections = "too_many_connections", false, "too many connections for this agent";
    TooManyUnauthorizedConnections = "too_many_unauthorized_connections", true, "too many unauthenticated connections";
    RolePermissionsChanged = "role_permissions_changed", true, "v3.6: the agent's role or permissions changed";
    CustomerBanned = "customer_banned", false, "customer side: the customer was banned";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for &r in DisconnectReason::ALL {
            let v = serde_json::to_value(r).unwrap();
            assert_eq!(v, serde_json::Value::String(r.as_str().into()));
            assert_eq!(serde_json::from_value::<DisconnectReason>(v).unwrap(), r);
        }
    }
}
