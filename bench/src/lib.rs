//! turbochat-bench: the measuring instrument. It starts each system under
//! test in turn, connects real WebSocket clients, offers a fixed open-loop
//! load and reports latency, loss and memory side by side.
//!
//! The data path, by file:
//! - [`system`]: what is measured — turbochat clusters (through the
//!   cluster-tests harness, on PostgreSQL), the [`floor`] server, the
//!   Socket.IO peer and the seed's Go server ([`seedgo`]).
//! - [`dial`]: client sockets (many loopback source addresses, raised file
//!   limit).
//! - [`load`]: the fleet of clients and the open-loop scheduler; latency
//!   from the intended send time.
//! - [`rss`]: resident memory of the server processes; [`cpu`]: their CPU
//!   time per message.
//! - [`server`]: the nodes' own metrics over a phase (where the time goes).
//! - [`report`]: percentiles, the side-by-side table, the JSON.
//! - [`run`], [`memory`], [`sweep`]: the modes; [`chart`]: the SVG.
//! - [`hook`]: a moderation hook that allows everything, to measure the
//!   node's call to one.

pub mod chart;
pub mod cpu;
pub mod dial;
pub mod floor;
pub mod hook;
pub mod load;
pub mod memory;
pub mod report;
pub mod rss;
pub mod run;
pub mod seedgo;
pub mod server;
pub mod sweep;
pub mod system;
