//! `TrendingIssues`: tells everyone when an issue is taking off. When an
//! issue gets `TRENDING_UPVOTES` upvotes within `TRENDING_WINDOW_SECS`, every
//! socket receives `issue:trending` — once; the issue can trend again only
//! after its count in the window has dropped below the threshold.
//!
//! The example of an actor that both listens (upvotes, through
//! [`Kit::subscribe`]) and pushes (through [`Pusher`]). The counting is
//! [`UpvoteWindow`], plain and tested without an actor or a clock; in
//! cluster mode it is the same count kept in Redis
//! (`cluster::window::record`), so that upvotes on every node count and
//! one node announces.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::kit::{Kit, Published, Pusher};
use crate::cluster::Cluster;
use crate::domain::events::DomainEvent;
use crate::protocol::events::{ISSUE_TRENDING, issue_trending};

/// Upvotes that may wait in the mailbox; beyond it they are dropped (and
/// logged) rather than slow the upvoting requests.
const MAILBOX: usize = 10_000;

/// How often issues with no upvotes left in the window are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Added upvotes per issue in a sliding window.
pub struct UpvoteWindow {
    threshold: usize,
    window: Duration,
    issues: HashMap<String, Recent>,
}

struct Recent {
    /// When the newest upvotes came, oldest first. At most `threshold` are
    /// kept: whether the issue is at the threshold depends only on whether
    /// the `threshold`-th newest is still in the window, so older ones
    /// would change nothing (and an issue upvoted and withdrawn in a loop
    /// cannot grow this).
    times: VecDeque<Instant>,
    /// Announced since its count last was below the threshold.
    announced: bool,
}

impl UpvoteWindow {
    pub fn new(threshold: u32, window: Duration) -> Self {
        Self { threshold: threshold.max(1) as usize, window, issues: HashMap::new() }
    }

    /// Counts one added upvote at `now` (times never go backwards). Answers
    /// the count in the window when this upvote makes the issue trend.
    pub fn record(&mut self, issue_id: &str, now: Instant) -> Option<usize> {
        let (threshold, window) = (self.threshold, self.window);
        let recent = self
            .issues
            .entry(issue_id.to_string())
            .or_insert_with(|| Recent { times: VecDeque::with_capacity(threshold), announced: false });
        expire(&mut recent.times, now, window);
        if recent.times.len() < threshold {
            recent.announced = false;
        }
        if recent.times.len() == threshold {
            recent.times.pop_front();
        }
        recent.times.push_back(now);
        if recent.times.len() == threshold && !recent.announced {
            recent.announced = true;
            return Some(recent.times.len());
        }
        None
    }

    /// Forgets the issues with no upvotes in the window at `now`.
    pub fn prune(&mut self, now: Instant) {
        let window = self.window;
        self.issues.retain(|_, recent| {
            expire(&mut recent.times, now, window);
            !recent.times.is_empty()
        });
    }

    /// Issues remembered now.
    pub fn tracked(&self) -> usize {
        self.issues.len()
    }
}

/// Drops the times that are `window` or more before `now`.
fn expire(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times.front().is_some_and(|&t| now.duration_since(t) >= window) {
        times.pop_front();
    }
}

pub struct TrendingIssues {
    counts: UpvoteWindow,
    threshold: u32,
    window: Duration,
    push: Pusher,
    cluster: Option<Arc<Cluster>>,
}

impl TrendingIssues {
    /// Starts the actor, subscribed to added upvotes (a withdrawal is an
    /// `IssueUpvoted` too, with `upvoted: false`; it does not count).
    pub fn start(kit: &Kit) -> Addr<Self> {
        let config = kit.config();
        let actor = TrendingIssues {
            counts: UpvoteWindow::new(config.trending_upvotes, config.trending_window),
            threshold: config.trending_upvotes,
            window: config.trending_window,
            push: kit.push(),
            cluster: kit.cluster(),
        };
        let addr = Actor::start(actor);
        kit.subscribe(&addr, |event| matches!(event, DomainEvent::IssueUpvoted(u) if u.upvoted));
        addr
    }
}

impl Actor for TrendingIssues {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The kit offers events with try_send, which this bound limits.
        ctx.set_mailbox_capacity(MAILBOX);
        ctx.run_interval(PRUNE_EVERY, |actor, _| actor.counts.prune(Instant::now()));
    }
}

impl Handler<Published> for TrendingIssues {
    type Result = ();

    fn handle(&mut self, Published(event): Published, ctx: &mut Context<Self>) {
        let DomainEvent::IssueUpvoted(upvote) = event.as_ref() else { return };
        let Some(cluster) = self.cluster.clone() else {
            let recent = self.counts.record(&upvote.issue_id, Instant::now());
            return self.announce(&upvote.issue_id, upvote.upvotes, recent);
        };
        let (threshold, window) = (self.threshold, self.window);
        let (issue_id, upvotes) = (upvote.issue_id.clone(), upvote.upvotes);
        let name = format!("trending:{issue_id}");
        let counted = async move { crate::cluster::window::record(&cluster, &name, threshold, window).await };
        // In order, one at a time: the mailbox keeps the upvotes meanwhile.
        ctx.wait(counted.into_actor(self).map(move |counted, actor, _| match counted {
            Ok(recent) => actor.announce(&issue_id, upvotes, recent),
            Err(e) => {
                log::warn!(target: "civicpulse::trending", "issue={issue_id} upvote not counted: Redis: {e}")
            }
        }));
    }
}

impl TrendingIssues {
    fn announce(&self, issue_id: &str, upvotes: i64, recent: Option<usize>) {
        let Some(recent) = recent else { return };
        let window_secs = self.window.as_secs();
        log::info!(target: "civicpulse::trending", "issue={issue_id} trending: {recent} upvotes in {window_secs}s");
        self.push.to_everyone(ISSUE_TRENDING, issue_trending(issue_id, upvotes, recent, window_secs));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn trends_once_when_the_threshold_is_reached_within_the_window() {
        let t0 = Instant::now();
        let mut w = UpvoteWindow::new(3, MINUTE);
        assert_eq!(w.record("iss_a", at(t0, 0)), None);
        assert_eq!(w.record("iss_a", at(t0, 10)), None);
        assert_eq!(w.record("iss_a", at(t0, 20)), Some(3));
        // Still above the threshold: not announced again.
        assert_eq!(w.record("iss_a", at(t0, 30)), None);
        assert_eq!(w.record("iss_a", at(t0, 40)), None);
    }

    #[test]
    fn upvotes_older_than_the_window_do_not_count() {
        let t0 = Instant::now();
        let mut w = UpvoteWindow::new(3, MINUTE);
        assert_eq!(w.record("iss_a", at(t0, 0)), None);
        assert_eq!(w.record("iss_a", at(t0, 50)), None);
        // The first is exactly a window old: out.
        assert_eq!(w.record("iss_a", at(t0, 60)), None);
        assert_eq!(w.record("iss_a", at(t0, 61)), Some(3));
    }

    #[test]
    fn issues_are_counted_apart() {
        let t0 = Instant::now();
        let mut w = UpvoteWindow::new(2, MINUTE);
        assert_eq!(w.record("iss_a", at(t0, 0)), None);
        assert_eq!(w.record("iss_b", at(t0, 1)), None);
        assert_eq!(w.record("iss_b", at(t0, 2)), Some(2));
        assert_eq!(w.record("iss_a", at(t0, 3)), Some(2));
    }

    #[test]
    fn trends_again_only_after_dropping_below_the_threshold() {
        let t0 = Instant::now();
        let mut w = UpvoteWindow::new(2, MINUTE);
        assert_eq!(w.record("iss_a", at(t0, 0)), None);
        assert_eq!(w.record("iss_a", at(t0, 1)), Some(2));
        // Steady upvotes keep it at the threshold: no repeat.
        for s in (20..300).step_by(20) {
            assert_eq!(w.record("iss_a", at(t0, s)), None, "at {s}s");
        }
        // A quiet spell lets the count fall to 1, then it crosses again.
        assert_eq!(w.record("iss_a", at(t0, 500)), None);
        assert_eq!(w.record("iss_a", at(t0, 501)), Some(2));
    }

    #[test]
    fn a_threshold_of_one_trends_on_the_first_upvote() {
        let t0 = Instant::now();
        let mut w = UpvoteWindow::new(1, MINUTE);
        assert_eq!(w.record("iss_a", at(t0, 0)), Some(1));
        assert_eq!(w.record("iss_a", at(t0, 30)), None);
        assert_eq!(w.record("iss_a", at(t0, 200)), Some(1));
    }

    #[test]
    fn prune_forgets_issues_with_no_upvotes_in_the_window() {
        let t0 = Instant::now();
        let mut w = UpvoteWindow::new(5, MINUTE);
        w.record("iss_a", at(t0, 0));
        w.record("iss_b", at(t0, 30));
        w.prune(at(t0, 45));
        assert_eq!(w.tracked(), 2);
        w.prune(at(t0, 70));
        assert_eq!(w.tracked(), 1);
        w.prune(at(t0, 90));
        assert_eq!(w.tracked(), 0);
    }

    #[test]
    fn memory_per_issue_is_bounded_by_the_threshold() {
        let t0 = Instant::now();
        let mut w = UpvoteWindow::new(3, MINUTE);
        for ms in 0..10_000 {
            w.record("iss_a", t0 + Duration::from_millis(ms));
        }
        assert!(w.issues["iss_a"].times.len() <= 3);
    }
}
