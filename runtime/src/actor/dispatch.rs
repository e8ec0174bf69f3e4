//! The one part of an actor's event loop that knows the actor's type: decode a message, run the
//! handler or hook, encode the reply. Everything else (connections, hellos, back-pressure, the
//! end) is the non-generic [`Endpoint`](super::endpoint::Endpoint), compiled once for every
//! actor type.

use std::os::fd::{OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::context::{Context, Control};
use super::{Actor, Down};
use crate::bootstrap;
use crate::error::{Error, ExitReason, Result};
use crate::wire;

/// A hook of the actor's life the endpoint runs.
pub(crate) enum Hook {
    Started,
    /// A monitored actor ended.
    Down(Down),
    /// A linked actor ended, and this actor traps exits.
    Exit(Down),
    /// A normal end, before the last words.
    Stopping,
}

/// Where an ask's reply goes. The dispatcher encodes it into the endpoint's buffer (through
/// `encode`) while the reply value lives: descriptors it carries are the value's, and must stay
/// open until the frame is sent.
pub(crate) trait Answer {
    /// Sends the reply `encode` writes into the buffer it is given (or a failure, if it fails).
    fn reply(&mut self, encode: &mut dyn FnMut(&mut Vec<u8>) -> Result<Vec<RawFd>>);
    /// Sends a failure: the message could not be decoded.
    fn failed(&mut self, e: &Error);
}

/// An actor's state and context, as the endpoint sees them.
pub(crate) trait Dispatch {
    /// What the event loop reads and writes of the context.
    fn control(&mut self) -> &mut Control;
    /// Decodes and handles one message (an ask if `answer` is given). `Err`: the actor ends.
    fn message(
        &mut self,
        payload: &[u8],
        fds: Vec<OwnedFd>,
        answer: Option<&mut dyn Answer>,
    ) -> std::result::Result<(), ExitReason>;
    /// Runs a hook; `Err` with the reason when it panicked.
    fn hook(&mut self, hook: Hook) -> std::result::Result<(), ExitReason>;
    /// The last hook, once the reason is known (a panic in it changes nothing).
    fn stopped(&mut self, reason: &ExitReason);
}

/// An actor of type `A`, running.
pub(crate) struct Running<A: Actor> {
    pub state: A,
    pub ctx: Context<A>,
}

impl<A: Actor> Dispatch for Running<A> {
    #[inline]
    fn control(&mut self) -> &mut Control {
        &mut self.ctx.ctl
    }

    fn message(
        &mut self,
        payload: &[u8],
        fds: Vec<OwnedFd>,
        answer: Option<&mut dyn Answer>,
    ) -> std::result::Result<(), ExitReason> {
        let msg = match wire::decode::<A::Msg>(payload, fds) {
            Ok(m) => m,
            Err(e) => {
                log::warn!(target: "procactor::actor", "actor {:?} could not decode a message: {e}", self.ctx.name());
                if let Some(a) = answer {
                    a.failed(&e);
                }
                return Ok(());
            }
        };
        let (state, ctx) = (&mut self.state, &mut self.ctx);
        let reply =
            catch_unwind(AssertUnwindSafe(|| state.handle(msg, ctx))).map_err(|p| panicked(&*p))?;
        if let Some(a) = answer {
            a.reply(&mut |buf| wire::encode(&reply, buf));
        }
        Ok(())
    }

    fn hook(&mut self, hook: Hook) -> std::result::Result<(), ExitReason> {
        let (state, ctx) = (&mut self.state, &mut self.ctx);
        catch_unwind(AssertUnwindSafe(|| match hook {
            Hook::Started => state.started(ctx),
            Hook::Down(d) => state.on_down(d, ctx),
            Hook::Exit(d) => state.on_exit(d, ctx),
            Hook::Stopping => state.stopping(ctx),
        }))
        .map_err(|p| panicked(&*p))
    }

    fn stopped(&mut self, reason: &ExitReason) {
        let state = &mut self.state;
        let _ = catch_unwind(AssertUnwindSafe(|| state.stopped(reason)));
    }
}

/// The reason of an actor whose handler or hook panicked.
pub(crate) fn panicked(payload: &(dyn std::any::Any + Send)) -> ExitReason {
    let (message, location) = bootstrap::caught_panic(payload);
    ExitReason::Panicked { message, location }
}
