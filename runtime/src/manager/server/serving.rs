//! The manager's side of its gateways (see `gateway.rs` for the other side): remote sessions
//! are served by the manager's own event loop, as network callers tagged with their gateway's
//! id, and this decides what they may do.
//!
//! A session may only call objects it holds (it created them, or got them by a published
//! name), create objects of the kinds its gateway allows (with this process's constructor for
//! the kind: a peer names a kind, never a function), get what its gateway published, release,
//! and count. Everything else a manager takes (lends, adoptions, lifelines, local creates with
//! a function reference) is refused: those name this host's sockets and code.

use std::collections::HashMap;

use super::{as_remote, MakeFn, ManagerCore};
use crate::actor::Context;
use crate::manager::proto::{self, Fault, FnRef, Packed, Request, Response};
use crate::pipe::Connection;

/// Sessions one gateway serves at once; more are closed at once.
const MAX_SESSIONS: usize = 1024;

/// What one gateway lets its sessions do.
pub(super) struct Served {
    /// The connection that opened it: the gateway closes with it.
    owner: u64,
    /// Kinds its sessions may create, with their constructors and names.
    allowed: HashMap<u64, (MakeFn, String)>,
    /// Objects published by name, with their kinds: `owner` holds one reference to each.
    published: HashMap<String, (u64, u64)>,
}

/// The gateways of this manager.
#[derive(Default)]
pub(super) struct Gateways {
    served: HashMap<u64, Served>,
    next: u64,
}

impl ManagerCore {
    /// A request from a remote session of gateway `gateway`, on connection `from`.
    pub(super) fn remote_request(
        &mut self,
        gateway: u64,
        from: u64,
        asking: bool,
        msg: Request<Packed>,
    ) -> Response {
        match msg {
            Request::RemoteCall { obj, kind, op } => {
                if !self.holds.get(&from).is_some_and(|h| h.contains_key(&obj)) {
                    return Response::Failed(Fault::Gone(obj));
                }
                as_remote(|| self.call(from, asking, obj, kind, op))
            }
            Request::RemoteCreate {
                kind,
                kind_name,
                init,
            } => {
                let make = self
                    .gateways
                    .served
                    .get(&gateway)
                    .and_then(|g| g.allowed.get(&kind))
                    .map(|(make, _)| *make);
                let Some(make) = make else {
                    return Response::Failed(Fault::bad(format!(
                        "this gateway does not let clients create a {kind_name}: on the serving \
                         side, call gateway.allow::<{kind_name}>()"
                    )));
                };
                as_remote(|| self.create_with(from, make, init))
            }
            Request::Get { name, kind } => self.get_published(gateway, from, &name, kind),
            Request::Release { obj } => {
                self.release(from, obj);
                Response::Done
            }
            Request::Count => Response::Count(self.objects.len() as u64),
            _ => Response::Failed(Fault::bad(
                "not an operation a remote session may ask of a manager",
            )),
        }
    }

    fn get_published(&mut self, gateway: u64, from: u64, name: &str, kind: u64) -> Response {
        let found = self
            .gateways
            .served
            .get(&gateway)
            .and_then(|g| g.published.get(name).copied());
        let Some((obj, published_kind)) = found else {
            return Response::Failed(Fault::NotFound(format!(
                "no object is published as {name:?}"
            )));
        };
        let Some(e) = self.objects.get_mut(&obj) else {
            return Response::Failed(Fault::Gone(obj));
        };
        if published_kind != kind {
            return Response::Failed(Fault::bad(format!(
                "{name:?} is a {}, not the proxy type asked for",
                e.obj.kind().1
            )));
        }
        e.refs += 1;
        *self.holds.entry(from).or_default().entry(obj).or_insert(0) += 1;
        Response::Created(obj)
    }

    /// A request about gateways, from a process of this host (`None`: not one of those).
    pub(super) fn gateway_request(
        &mut self,
        from: u64,
        msg: Request<Packed>,
        ctx: &mut Context<Self>,
    ) -> Result<Response, Request<Packed>> {
        Ok(match msg {
            Request::OpenGateway => {
                self.gateways.next += 1;
                let id = self.gateways.next;
                let served = Served {
                    owner: from,
                    allowed: HashMap::new(),
                    published: HashMap::new(),
                };
                self.gateways.served.insert(id, served);
                Response::Created(id)
            }
            Request::Allow {
                gateway,
                kind,
                kind_name,
                make,
            } => self.allow(gateway, kind, kind_name, make),
            Request::Publish {
                gateway,
                name,
                obj,
                kind,
            } => self.publish(from, gateway, name, obj, kind),
            Request::Session { gateway, conn } => self.adopt_session(gateway, conn, ctx),
            Request::Sessions { gateway } => {
                Response::Count(ctx.ctl.net_callers.get(&gateway).copied().unwrap_or(0) as u64)
            }
            Request::CloseGateway { gateway } => {
                self.close_gateway(gateway, ctx);
                Response::Done
            }
            other => return Err(other),
        })
    }

    fn allow(&mut self, gateway: u64, kind: u64, kind_name: String, make: FnRef) -> Response {
        let make = match proto::make_fn(make) {
            Ok(f) => f,
            Err(f) => return Response::Failed(f),
        };
        match self.gateways.served.get_mut(&gateway) {
            Some(g) => {
                g.allowed.insert(kind, (make, kind_name));
                Response::Done
            }
            None => Response::Failed(Fault::bad("no such gateway")),
        }
    }

    fn publish(&mut self, from: u64, gateway: u64, name: String, obj: u64, kind: u64) -> Response {
        let Some(g) = self.gateways.served.get(&gateway) else {
            return Response::Failed(Fault::bad("no such gateway"));
        };
        // Only what the publisher holds: a name cannot reach an object it could not.
        if !self.holds.get(&from).is_some_and(|h| h.contains_key(&obj)) {
            return Response::Failed(Fault::Gone(obj));
        }
        match self.objects.get_mut(&obj) {
            Some(e) if e.obj.kind().0 == kind => e.refs += 1,
            Some(e) => {
                return Response::Failed(Fault::bad(format!(
                    "object #{obj} is a {}, not the proxy type given",
                    e.obj.kind().1
                )))
            }
            None => return Response::Failed(Fault::Gone(obj)),
        }
        let owner = g.owner;
        *self.holds.entry(owner).or_default().entry(obj).or_insert(0) += 1;
        let replaced = self
            .gateways
            .served
            .get_mut(&gateway)
            .and_then(|g| g.published.insert(name, (obj, kind)));
        if let Some((old, _)) = replaced {
            self.release(owner, old);
        }
        Response::Done
    }

    fn adopt_session(&mut self, gateway: u64, conn: Packed, ctx: &mut Context<Self>) -> Response {
        if !self.gateways.served.contains_key(&gateway) {
            return Response::Failed(Fault::bad("no such gateway"));
        }
        let serving =
            ctx.ctl.net_callers.get(&gateway).copied().unwrap_or(0) + ctx.ctl.net_adopt.len();
        if serving >= MAX_SESSIONS {
            log::warn!(target: "procactor::manager", "a gateway has {MAX_SESSIONS} sessions: a new one is closed");
            return Response::Failed(Fault::bad("too many sessions"));
        }
        let stream = match conn.decode::<Connection<()>>() {
            Ok(c) => c.into_stream(),
            Err(e) => return Response::Failed(Fault::bad(e)),
        };
        match stream {
            Some(stream) => {
                ctx.ctl.net_adopt.push((stream, gateway));
                Response::Done
            }
            None => Response::Failed(Fault::bad("not a network connection")),
        }
    }

    /// Ends `gateway`: its sessions are let go of (their references released as they close),
    /// and what it published is released.
    pub(super) fn close_gateway(&mut self, gateway: u64, ctx: &mut Context<Self>) {
        let Some(g) = self.gateways.served.remove(&gateway) else {
            return;
        };
        ctx.ctl.net_close.push(gateway);
        for (obj, _) in g.published.into_values() {
            self.release(g.owner, obj);
        }
    }

    /// The gateways connection `token` opened (it closed: they end with it).
    pub(super) fn gateways_of(&self, token: u64) -> Vec<u64> {
        self.gateways
            .served
            .iter()
            .filter(|(_, g)| g.owner == token)
            .map(|(id, _)| *id)
            .collect()
    }
}
