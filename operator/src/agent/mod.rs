//! The workspace agent (`berth agent`): the supervisor inside every
//! workspace container. It depends on nothing of the operator but the wire
//! protocol ([`protocol`]).
//!
//! # Design
//! The agent is one process with three concurrent parts around one shared
//! state ([`state`]: the lifecycle, every script's status and its resend
//! buffer of log lines, and the changes not yet sent):
//! - the **connection** ([`conn`]) dials the operator (outbound only), says
//!   `Hello` with the full current state, takes the manifest from the first
//!   `Welcome` only, reports every change and streams the logs in batches;
//!   it reconnects with backoff for as long as the agent runs, and resends
//!   every line the operator has not acknowledged ([`logbuf`]);
//! - the **scripts** ([`scripts`]) run as `/bin/sh` processes, each in its
//!   own process group, with an environment built explicitly (no agent
//!   token anywhere; template secrets for scripts only);
//! - the **supervisor** ([`supervisor`]) ties them together and runs the
//!   stop on SIGTERM within the container's stop timeout.
//!
//! A fourth, small part ([`activity`]) takes reports of use on a Unix
//! socket and forwards them.
//!
//! Not done: reaping orphans when the agent is PID 1 (ECS runs the
//! container with `initProcessEnabled`, so tini is PID 1 and reaps).

pub mod activity;
pub mod cli;
pub mod conn;
pub mod logbuf;
pub mod protocol;
pub mod scripts;
pub mod state;
pub mod streams;
pub mod supervisor;

pub use conn::Tuning;
pub use supervisor::{run, AgentError, AgentExit, AgentOptions};
