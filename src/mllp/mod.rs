//! MLLP transport: framing, a server that feeds frames to a handler, a client, a load tool.
//!
//! This module moves frames and knows nothing of HL7 semantics or storage: the caller's
//! [`FrameHandler`] decides what each inbound item means and which answers go back.
//!
//! - [`codec`]: the `0x0B … 0x1C 0x0D` framing as a tokio-util codec, tolerant of sloppy
//!   senders, bounded in memory.
//! - [`server`]: accept loop with a connection limit, one task per connection answering frames
//!   in order, idle and mid-frame timeouts, graceful shutdown.
//! - [`client`]: send one frame, wait for one answer.
//! - [`load`]: drive a server with many connections and report throughput and latency.

pub mod client;
pub mod codec;
mod error;
pub mod load;
pub mod server;

pub use client::{ClientSettings, MllpClient};
pub use codec::{Inbound, MllpCodec};
pub use error::MllpError;
pub use load::{LoadReport, MessageSource, cycle, run_load, run_load_with};
pub use server::{
    FrameHandler, ServerSettings, ServerStats, ServerStatsSnapshot, serve, serve_tls,
};
