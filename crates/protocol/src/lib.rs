//! Every shape chatgate puts on (or reads from) the wire: the Agent Chat API
//! v3.5 envelopes, the error catalogue, disconnect reasons, protocol versions,
//! data structures and per-method payloads.
//!
//! This crate does no IO and knows nothing about sessions or storage; it is the
//! only place that derives `Serialize`/`Deserialize` for protocol types
//! (invariant 1 in ARCHITECTURE.md). Request types tolerate unknown fields,
//! because the vendor's SDKs send fields that later versions removed
//! (for example `push_notifications` on `login`).

pub mod chats;
pub mod config;
pub mod data;
pub mod disconnect;
pub mod envelope;
pub mod error;
pub mod methods;
pub mod pushes;
pub mod version;

pub use disconnect::DisconnectReason;
pub use envelope::{PushFrame, RequestFrame, ResponseFrame};
pub use error::{ErrorBody, ErrorEnvelope, ErrorType};
pub use version::Version;
