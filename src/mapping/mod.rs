//! TODO: being written in parallel (declarative mapping files)
