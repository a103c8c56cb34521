//! The event loop: one thread that owns the core, its timers and the metafile.
//! Everything else arrives as an `Event` over one bounded channel, and the loop
//! sleeps in `recv_timeout` until the next deadline of the timer wheel. There is
//! no polling tick: an idle agent wakes only for its next exchange.

use crate::agent::{Core, Effect, Outcome};
use crate::clock::Clock;
use crate::http::Exchange;
use crate::logging::LogHandle;
use crate::meta::MetaStore;
use log::{error, info, warn};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

/// What wakes the loop.
#[derive(Debug)]
pub enum Event {
    /// A signal, from the signal thread.
    Signal(i32),
    /// The outcome of the exchange in flight, from the HTTP thread.
    Exchanged(Outcome),
}

/// Why the loop stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// `SIGTERM` or `SIGINT`.
    Signalled(i32),
    /// Every sender of events is gone: a thread died.
    ChannelsClosed,
}

pub struct EventLoop<'a, C: Clock> {
    pub core: Core,
    pub store: &'a MetaStore,
    pub clock: &'a C,
    pub events: Receiver<Event>,
    pub http: SyncSender<Exchange>,
    pub log: LogHandle,
}

impl<C: Clock> EventLoop<'_, C> {
    pub fn run(mut self) -> Exit {
        let mut effects = Vec::new();
        loop {
            let now = self.clock.now_ms();
            self.core.on_time(now, self.clock.wall_s(), &mut effects);
            self.carry_out(&mut effects);

            let event = match self.core.next_deadline() {
                Some(deadline) => {
                    let wait = Duration::from_millis(deadline.saturating_sub(self.clock.now_ms()));
                    self.events.recv_timeout(wait)
                }
                None => self
                    .events
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match event {
                Ok(Event::Exchanged(outcome)) => {
                    let now = self.clock.now_ms();
                    self.core.on_outcome(now, outcome, &mut effects);
                    self.carry_out(&mut effects);
                }
                Ok(Event::Signal(libc::SIGHUP)) => {
                    if let Err(err) = self.log.reopen() {
                        error!("cannot reopen the log file: {err}");
                    }
                    info!("SIGHUP: log file reopened");
                }
                Ok(Event::Signal(signal)) => {
                    self.save();
                    return Exit::Signalled(signal);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.save();
                    return Exit::ChannelsClosed;
                }
            }
        }
    }

    fn carry_out(&mut self, effects: &mut Vec<Effect>) {
        let mut save = false;
        for effect in effects.drain(..) {
            match effect {
                Effect::SaveMeta => save = true,
                Effect::Send { server, path, body } => {
                    let exchange = Exchange {
                        url: server.url(path),
                        body,
                        headers: Vec::new(),
                    };
                    if let Err(err) = self.http.try_send(exchange) {
                        let why = match err {
                            TrySendError::Full(_) => "HTTP thread busy",
                            TrySendError::Disconnected(_) => "HTTP thread gone",
                        };
                        warn!("cannot start an exchange: {why}");
                        let now = self.clock.now_ms();
                        let mut more = Vec::new();
                        self.core
                            .on_outcome(now, Outcome::Failed(why.to_string()), &mut more);
                        // A failure schedules the next try; it sends nothing itself.
                        save |= more.contains(&Effect::SaveMeta);
                    }
                }
            }
        }
        if save {
            self.save();
        }
    }

    fn save(&self) {
        if let Err(err) = self.store.save(self.core.meta()) {
            error!("{err}; keeping the state in memory and retrying at the next change");
        }
    }
}
