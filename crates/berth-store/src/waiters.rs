//! In-process FIFO queues of lease acquirers waiting on an environment.
//!
//! The database decides who holds a lease; this only decides *who tries next*. Waiters join the
//! queue of their environment before their first attempt (so a release between the attempt
//! and the wait cannot be missed: `Notify` keeps the permit). A release wakes the head of the
//! queue; each woken waiter, after its attempt, passes the turn on down the queue to the first
//! waiter that could possibly succeed, so attempts are made in arrival order:
//! - granted: the next waiter behind it (there may be more room);
//! - blocked by single flight on scope S: the next waiter whose scope is not S;
//! - blocked by capacity: nobody (everyone behind is blocked by capacity too).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use berth_core::EnvironmentId;
use tokio::sync::Notify;

use crate::codec::Blocked;

struct Entry {
    ticket: u64,
    scope_key: String,
    notify: Arc<Notify>,
}

#[derive(Default)]
pub(crate) struct Waiters {
    queues: Mutex<HashMap<EnvironmentId, VecDeque<Entry>>>,
    next_ticket: AtomicU64,
}

/// A place in an environment's queue.
pub(crate) struct Ticket {
    pub environment_id: EnvironmentId,
    pub ticket: u64,
    pub notify: Arc<Notify>,
}

/// What happened to a waiter's attempt, deciding who goes next.
pub(crate) enum Turn<'a> {
    /// Granted, or gave up: the next waiter may try.
    Done,
    Blocked(&'a Blocked, &'a str),
}

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, HashMap<EnvironmentId, VecDeque<Entry>>> {
        // A poisoned queue map is still a consistent map: every mutation is a single call.
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn enqueue(&self, environment_id: EnvironmentId, scope_key: &str) -> Ticket {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        self.lock()
            .entry(environment_id)
            .or_default()
            .push_back(Entry {
                ticket,
                scope_key: scope_key.to_owned(),
                notify: notify.clone(),
            });
        Ticket {
            environment_id,
            ticket,
            notify,
        }
    }

    /// Whether `t` is first in its queue.
    pub(crate) fn is_head(&self, t: &Ticket) -> bool {
        self.lock()
            .get(&t.environment_id)
            .and_then(|q| q.front())
            .is_some_and(|e| e.ticket == t.ticket)
    }

    /// A lease of the environment left `active` (or its capacity grew): wake the head.
    pub(crate) fn wake(&self, environment_id: EnvironmentId) {
        if let Some(head) = self.lock().get(&environment_id).and_then(|q| q.front()) {
            head.notify.notify_one();
        }
    }

    /// After an attempt by `t`: stay queued when blocked, leave when done, and pass the turn on.
    pub(crate) fn after_attempt(&self, t: &Ticket, turn: Turn<'_>) {
        let mut queues = self.lock();
        let Some(queue) = queues.get_mut(&t.environment_id) else {
            return;
        };
        let Some(pos) = queue.iter().position(|e| e.ticket == t.ticket) else {
            return;
        };
        let next = match turn {
            Turn::Done => {
                queue.remove(pos);
                queue.get(pos)
            }
            Turn::Blocked(Blocked::Capacity, _) => None,
            Turn::Blocked(Blocked::SingleFlight, scope) => {
                queue.iter().skip(pos + 1).find(|e| e.scope_key != scope)
            }
        };
        if let Some(next) = next {
            next.notify.notify_one();
        }
        if queue.is_empty() {
            queues.remove(&t.environment_id);
        }
    }
}
