//! TODO: being written in parallel
