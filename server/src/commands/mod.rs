//! One module per subcommand.
pub mod batch;
pub mod classify;
pub mod eval;
pub mod hotspots;
pub mod import;
pub mod models;
pub mod serve;
pub mod smoke;
pub mod store;
pub mod train;
