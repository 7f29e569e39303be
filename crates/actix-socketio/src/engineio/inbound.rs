//! The bound on what a client may have in hand on the server at once.
//!
//! Every message a client sends is handed to the application with an
//! [`InboundPermit`]; the application keeps it for as long as it is still
//! working on the message (a database write, a lookup) and drops it when
//! done. Once a connection has `max_inflight` permits out, its WebSocket
//! task stops reading, so the kernel's buffers fill and TCP pushes back on
//! the client; a polling POST is answered only once the count is below the
//! bound again, and a client may have one POST at a time. A client that
//! floods without reading thus costs at most `max_inflight` messages of
//! work plus what one read or one POST body holds.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// Messages of one connection that the application has not finished with.
#[derive(Debug)]
pub(crate) struct Inflight {
    count: AtomicUsize,
    limit: usize,
    /// Whoever waits for room: the WebSocket task, or the polling POST.
    waiter: AtomicWaker,
}

impl Inflight {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { count: AtomicUsize::new(0), limit: limit.max(1), waiter: AtomicWaker::new() })
    }

    /// A permit for one more message; it may take the count past the
    /// limit (the messages of one POST body are all handed over).
    pub(crate) fn permit(self: &Arc<Self>) -> InboundPermit {
        self.count.fetch_add(1, Ordering::AcqRel);
        InboundPermit(self.clone())
    }

    pub(crate) fn is_full(&self) -> bool {
        self.count.load(Ordering::Acquire) >= self.limit
    }

    /// Nothing in hand: every message handed over has been dealt with
    /// (what it queued for the client, e.g. its ack, is queued already).
    pub(crate) fn is_idle(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    /// Ready once there is room; registers `cx` to be woken when there is.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.is_full() {
            return Poll::Ready(());
        }
        self.waiter.register(cx.waker());
        // A permit dropped between the check and the registration woke
        // nobody: look again.
        if self.is_full() { Poll::Pending } else { Poll::Ready(()) }
    }

    pub(crate) async fn room(&self) {
        poll_fn(|cx| self.poll_room(cx)).await
    }
}

/// One client message the application is still working on. Dropping it
/// lets the connection take another.
#[derive(Debug)]
#[must_use = "dropping the permit at once releases the message's place"]
pub struct InboundPermit(Arc<Inflight>);

impl Drop for InboundPermit {
    fn drop(&mut self) {
        let before = self.0.count.fetch_sub(1, Ordering::AcqRel);
        if before == self.0.limit {
            self.0.waiter.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::task::{Wake, Waker};

    use super::*;

    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn full_at_the_limit_and_woken_when_a_permit_is_dropped() {
        let inflight = Inflight::new(2);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let a = inflight.permit();
        assert!(inflight.poll_room(&mut cx).is_ready());
        let b = inflight.permit();
        let c = inflight.permit();
        assert!(inflight.poll_room(&mut cx).is_pending());
        drop(c);
        assert!(!flag.0.load(Ordering::SeqCst), "still at the limit: nobody is woken");
        drop(b);
        assert!(flag.0.load(Ordering::SeqCst), "below the limit: the waiter is woken");
        assert!(inflight.poll_room(&mut cx).is_ready());
        assert!(!inflight.is_idle());
        drop(a);
        assert!(!inflight.is_full());
        assert!(inflight.is_idle());
    }
}
