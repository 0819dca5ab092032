//! Berth: declarative developer workspaces on AWS ECS Fargate and EFS.
//!
//! Module map: [`api`] (resource types and validation), [`store`]
//! (PostgreSQL), [`apply`] (the all-or-nothing apply engine shared by the API
//! and GitOps), [`gitops`] (the GitSource controller), [`server`] (HTTP API, auth), [`cli`] (the `berth` command).

pub mod agent;
pub mod api;
pub mod apply;
pub mod bench;
pub mod bench_agents;
pub mod bench_gitops;
pub mod bench_relay;
pub mod controllers;
pub mod fuzz;
pub mod gitops;
pub mod lifecycle;
pub mod localrt;
pub mod metrics;
pub mod relay;
pub mod server;
pub mod ssh;

pub mod cli;
pub mod localpg;
pub mod store;
