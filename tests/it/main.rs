//! kefu's integration tests, in one binary to save link time. They use the
//! real multilingual-e5-small model under `models/` (installed by
//! `scripts/fetch-model.sh`, which the README's test command runs first).

mod analytics;
mod api;
mod assist;
mod classify;
mod cli;
mod common;
mod context;
mod durability;
mod embedding;
mod hub;
mod model_errors;
mod quality;
mod server;
