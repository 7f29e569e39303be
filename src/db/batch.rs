//! A writer thread that runs queued jobs in batches. Under load, many small
//! writes (chat messages) then share one transaction, one pooled connection
//! and one thread hop, instead of each taking a blocking-pool thread and
//! queueing on SQLite's write lock (whose busy handler sleeps).

use tokio::sync::mpsc;

/// The most jobs one batch takes; what arrives meanwhile waits for the next.
const MAX_BATCH: usize = 256;

/// Jobs of type `J` queued for one writer thread.
pub struct Batcher<J> {
    queue: mpsc::Sender<J>,
}

impl<J> Clone for Batcher<J> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone() }
    }
}

impl<J: Send + 'static> Batcher<J> {
    /// Starts the thread; `run` gets every batch, in the order queued. The
    /// thread ends when the last `Batcher` is dropped.
    pub fn start(
        name: &str,
        capacity: usize,
        mut run: impl FnMut(Vec<J>) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (queue, mut jobs) = mpsc::channel(capacity);
        std::thread::Builder::new().name(name.to_string()).spawn(move || {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while let Some(first) = jobs.blocking_recv() {
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match jobs.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                run(std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH)));
            }
        })?;
        Ok(Self { queue })
    }

    /// Queues a job, waiting while the queue is full; gives the job back if
    /// the writer has stopped.
    pub async fn submit(&self, job: J) -> Result<(), J> {
        self.queue.send(job).await.map_err(|e| e.0)
    }
}
