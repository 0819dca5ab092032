//! Berth's cloud seam.
//!
//! The workspace controller talks to AWS only through the traits of this
//! crate: [`Ecs`] (task definitions, services), [`Efs`] (access points) and
//! [`Secrets`] (the per-start agent token). The crate depends on neither the
//! AWS SDK nor the database, so controller logic is tested against the
//! stateful in-memory [`sim`] and the composition root wires the AWS
//! implementation (a separate crate) behind the same traits (linkerd's
//! `core`/`runtime` split).
//!
//! * [`error`]: one error type with the AWS error code and a
//!   transient/permanent classification.
//! * [`ecs`], [`efs`], [`secrets`]: traits and domain types shaped after the
//!   AWS APIs (names, states, limits), limited to what a controller needs.
//! * [`tags`]: ownership tags that make creates adoptable after a crash.
//! * [`fargate`]: the Fargate CPU/memory table.
//! * [`ops`]: operation names, AWS's request rates, a token bucket.
//! * [`pacer`]: client-side pacing with interactive-before-bulk priority.
//! * [`sim`]: the simulated account (task lifecycle, throttling, faults).
//! * [`Cloud`]: the bundle a controller holds.

#![warn(missing_docs)]

pub mod ecs;
pub mod efs;
pub mod error;
pub mod fargate;
pub mod fence;
pub mod ops;
pub mod pacer;
pub mod region;
pub mod secrets;
pub mod sim;
pub mod tags;

mod cloud;

pub use cloud::Cloud;
pub use ecs::Ecs;
pub use efs::Efs;
pub use error::{CloudError, CloudResult, ErrorCode};
pub use ops::{Category, Operation, Rate};
pub use pacer::{Paced, Pacer, PacerConfig, Priority};
pub use secrets::{SecretString, Secrets};
pub use sim::{Sim, SimConfig};
pub use tags::{Owner, Tags};
