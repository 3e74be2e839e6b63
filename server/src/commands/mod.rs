//! One module per subcommand.
pub mod audit;
pub mod batch;
pub mod classify;
pub mod eval;
pub mod eval_drafts;
pub mod eval_workorder;
pub mod hotspots;
pub mod import;
pub mod models;
pub mod serve;
pub mod smoke;
pub mod store;
pub mod train;
