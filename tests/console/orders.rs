//! See tests/console.rs. (Being written.)

#[allow(unused_imports)]
use crate::support::*;
