//! A seeded, coverage-free fuzzing harness for tracegate's untrusted decoders (`tests/fuzz.rs`):
//! the run loop with crash and hang capture, byte- and tree-level mutators, generators for deep
//! nesting and protobuf wire data, and the seed corpora.
#![allow(dead_code)]

pub mod engine;
pub mod generate;
pub mod mutate;
pub mod seeds;

pub use engine::fuzz;
