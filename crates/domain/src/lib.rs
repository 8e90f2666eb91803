//! Pure rules of chatgate: the model of organizations, groups and agents, and
//! the decisions made on it (who may change whose status, what an agent's
//! effective routing status is given its connections).
//!
//! No IO, no clock, no environment, no serde: callers pass `now` and map these
//! types to wire or storage forms at their own edges.

pub mod model;
pub mod presence;
pub mod routing;
pub mod rules;
pub mod scopes;

pub use model::*;
