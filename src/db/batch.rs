//! A writer thread that runs queued jobs in batches. Under load, many small
//! writes (chat messages) then share one transaction, one pooled connection
//! and one thread hop, instead of each taking a blocking-pool thread and
//! queueing on SQLite's write lock (whose busy handler sleeps).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

/// The most jobs one batch takes; what arrives meanwhile waits for the next.
const MAX_BATCH: usize = 256;

/// Jobs of type `J` queued for one writer thread.
pub struct Batcher<J> {
    queue: mpsc::Sender<J>,
    /// Jobs submitted and not yet run (queued, or in the batch running).
    pending: Arc<AtomicUsize>,
    /// The last run left business unfinished (see [`Batcher::start`]).
    unfinished: Arc<AtomicBool>,
}

impl<J> Clone for Batcher<J> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone(), pending: self.pending.clone(), unfinished: self.unfinished.clone() }
    }
}

impl<J: Send + 'static> Batcher<J> {
    /// Starts the thread; `run` gets every batch, in the order queued. When
    /// it answers a duration (it has unfinished business: writes whose
    /// outcome is not known yet), it is called again after that long with
    /// an empty batch if no job came meanwhile. The thread ends when the
    /// last `Batcher` is dropped.
    pub fn start(
        name: &str,
        capacity: usize,
        mut run: impl FnMut(Vec<J>) -> Option<Duration> + Send + 'static,
    ) -> std::io::Result<Self> {
        let (queue, mut jobs) = mpsc::channel(capacity);
        let pending = Arc::new(AtomicUsize::new(0));
        let done = pending.clone();
        let unfinished = Arc::new(AtomicBool::new(false));
        let still = unfinished.clone();
        // Only to wait for a job with a time limit, on this thread.
        let timer = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
        std::thread::Builder::new().name(name.to_string()).spawn(move || {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            let mut again = None;
            loop {
                // None: every Batcher is gone. Some(None): the wait ran out.
                let next = match again {
                    None => jobs.blocking_recv().map(Some),
                    // The timer is made inside the runtime it needs.
                    Some(wait) => {
                        match timer.block_on(async { tokio::time::timeout(wait, jobs.recv()).await }) {
                            Ok(job) => job.map(Some),
                            Err(_) => Some(None),
                        }
                    }
                };
                let Some(first) = next else { break };
                batch.extend(first);
                while batch.len() < MAX_BATCH {
                    match jobs.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let jobs = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
                let n = jobs.len();
                // A panic loses this batch (its waiters hear nothing), not
                // the writer: later jobs must still be served.
                again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(jobs))).unwrap_or_else(
                    |_| {
                        log::error!(target: "civicpulse::db", "batch writer: a batch panicked; carrying on");
                        None
                    },
                );
                // Before the count goes down, so that idle is never seen
                // between the two.
                still.store(again.is_some(), Ordering::Release);
                done.fetch_sub(n, Ordering::AcqRel);
            }
        })?;
        Ok(Self { queue, pending, unfinished })
    }

    /// Queues a job, waiting while the queue is full; gives the job back if
    /// the writer has stopped.
    pub async fn submit(&self, job: J) -> Result<(), J> {
        let Ok(slot) = self.queue.reserve().await else { return Err(job) };
        // Counted before it is queued, so that the writer never counts it
        // down first, and only once it is (a cancelled wait counts nothing).
        self.pending.fetch_add(1, Ordering::AcqRel);
        slot.send(job);
        Ok(())
    }

    /// Every job submitted so far has run, and none is left unfinished
    /// (a stopping node waits for it).
    pub fn is_idle(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0 && !self.unfinished.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    use super::Batcher;

    const POISON: u32 = u32::MAX;

    #[test]
    fn jobs_run_in_order_and_a_panicking_batch_does_not_stop_the_writer() {
        let (done, seen) = mpsc::channel();
        let panicked = Arc::new(AtomicBool::new(false));
        let flag = panicked.clone();
        let batcher = Batcher::start("batch-test", 16, move |jobs: Vec<u32>| {
            for job in jobs {
                if job == POISON {
                    flag.store(true, Ordering::SeqCst);
                    panic!("this job fails on purpose");
                }
                done.send(job).expect("test alive");
            }
            None
        })
        .expect("writer thread");
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let next = || seen.recv_timeout(Duration::from_secs(10)).expect("a job ran");
        // More jobs than the queue holds: submit waits, nothing is lost.
        runtime.block_on(async {
            for job in 0..100 {
                assert!(batcher.submit(job).await.is_ok());
            }
        });
        assert_eq!((0..100).map(|_| next()).collect::<Vec<_>>(), (0..100).collect::<Vec<_>>());
        runtime.block_on(async { assert!(batcher.submit(POISON).await.is_ok()) });
        while !panicked.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        runtime.block_on(async {
            for job in 200..205 {
                assert!(batcher.submit(job).await.is_ok());
            }
        });
        assert_eq!((0..5).map(|_| next()).collect::<Vec<_>>(), (200..205).collect::<Vec<_>>());
        // Counted down after each batch has run, the panicking one included.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !batcher.is_idle() {
            assert!(std::time::Instant::now() < deadline, "the writer never went idle");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_writer_with_unfinished_business_is_called_again_and_not_idle_meanwhile() {
        let (calls, seen) = mpsc::channel();
        let (resume, finish) = mpsc::channel::<()>();
        let batcher = Batcher::start("batch-retry-test", 16, move |jobs: Vec<u32>| {
            let retry = jobs.contains(&1) || (jobs.is_empty() && finish.try_recv().is_err());
            calls.send(jobs).expect("test alive");
            // Job 1 leaves something to finish, until the test says so.
            retry.then_some(Duration::from_millis(20))
        })
        .expect("writer thread");
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        runtime.block_on(async { assert!(batcher.submit(1).await.is_ok()) });
        let next = || seen.recv_timeout(Duration::from_secs(10)).expect("a call");
        assert_eq!(next(), vec![1]);
        assert_eq!(next(), Vec::<u32>::new(), "called again with no job");
        assert!(!batcher.is_idle(), "idle with business unfinished");
        resume.send(()).expect("writer alive");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !batcher.is_idle() {
            assert!(std::time::Instant::now() < deadline, "the writer never went idle");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Finished: no more calls until a job comes.
        while seen.try_recv().is_ok() {}
        assert!(seen.recv_timeout(Duration::from_millis(200)).is_err());
        runtime.block_on(async { assert!(batcher.submit(2).await.is_ok()) });
        assert_eq!(next(), vec![2]);
    }
}
