//! The workspace agent (`berth agent`): the supervisor inside every
//! workspace container. It depends on nothing of the operator but the wire
//! protocol ([`protocol`]).

pub mod protocol;
