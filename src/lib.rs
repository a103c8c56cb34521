//! BootAgent: registers with a control server, reports status on a schedule and
//! follows the configuration the server sends. See `ARCHITECTURE.md` for the map.

pub mod addr;
pub mod agent;
pub mod app;
pub mod atomic_file;
pub mod child;
pub mod childlog;
pub mod cli;
pub mod clock;
pub mod console;
pub mod control;
pub mod download;
pub mod event_loop;
pub mod event_queue;
pub mod events;
pub mod forward;
pub mod health;
pub mod hostinfo;
pub mod http;
pub mod job_fields;
pub mod jobrun;
pub mod jobs;
pub mod journal;
pub mod limits;
pub mod logging;
pub mod message;
pub mod meta;
pub mod notify;
pub mod proxy;
pub mod report_event;
pub mod reslimit;
pub mod rng;
pub mod selfup;
pub mod servers;
pub mod sign;
#[cfg(test)]
mod simulation_tests;
pub mod status;
pub mod supervisor;
mod sys;
pub mod timers;
pub mod tls;
pub mod unpack;
pub mod wheel;
pub mod wire;
