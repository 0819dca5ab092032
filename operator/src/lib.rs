//! Berth: declarative developer workspaces on AWS ECS Fargate and EFS.
//!
//! Module map: [`api`] (resource types and validation), [`store`]
//! (PostgreSQL), [`apply`] (the all-or-nothing apply engine shared by the API
//! and GitOps), [`server`] (HTTP API, auth), [`cli`] (the `berth` command).

pub mod api;
pub mod apply;
pub mod bench;
pub mod controllers;
pub mod lifecycle;
pub mod metrics;
pub mod server;

pub mod cli;
pub mod localpg;
pub mod store;
