//! The fused training step: whole runs of SGD steps (batch gather, forward, backprop,
//! optimizer update) of a fully connected net in one call, on the parameter arrays in
//! place.
//!
//! - `shard.rs`: the first hidden layer split between two threads by units, and the
//!   step driver;
//! - `trainer.rs`: [`FusedTrainer`], the net's shards and everything after the first
//!   layer.

mod shard;
mod trainer;

pub(crate) use trainer::{check_batches, check_learning_rates};
pub use trainer::{FusedTrainer, LayerMut};
