//! kefu (客服): answer recommendation for e-commerce customer service.
//!
//! The library holds the engine; `main.rs` is a thin CLI over [`cli`].
//! Modules:
//! - [`embedding`]: text -> vector (candle BERT, tokenizer, model resolution,
//!   the offline model converter).
//! - [`store`]: the answer library in SQLite (answers, embedding cache).
//! - [`index`]: the HNSW vector index on disk.
//! - [`recommend`]: the engine: recommend, freshness, reindex, related answers.
//! - [`assist`]: sentiment and escalation of a customer's message.
//! - [`eval`]: retrieval-quality measurement (`kefu eval`).
//! - [`bench`]: embedding speed and memory (`kefu model bench`).
//! - [`privacy`]: masking of e-mails, phone and order numbers before storage.
//! - [`analytics`]: the query log, feedback, and the reports built on them.
//! - [`api`]: the HTTP API (axum).
//! - [`cli`]: command-line parsing and the commands.

pub mod analytics;
pub mod api;
pub mod assist;
pub mod bench;
pub mod cli;
pub mod demo;
pub mod embedding;
pub mod eval;
pub mod index;
pub mod privacy;
pub mod recommend;
pub mod server;
pub mod store;
