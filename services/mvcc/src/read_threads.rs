//! Threads of their own, at a lower CPU priority, for reads that may take
//! long (ranges over many keys). On a busy machine a large range then takes
//! only the CPU that writes and small reads leave over: the writes' applies,
//! the log's appends and the answers to one-key reads are not queued behind
//! megabytes of values, so their latency holds while large ranges run. On an
//! idle machine the priority changes nothing.

use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc, Mutex, OnceLock};

use tokio::sync::oneshot;

/// How much lower than the rest of the process (in nice steps, 0 to 19) the
/// read threads run: at 10 a read thread gets about a tenth of a core's
/// share beside a busy thread at the default priority.
const NICENESS: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// The queue the read threads take jobs from, started on first use.
static QUEUE: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();

fn queue() -> Option<&'static mpsc::Sender<Job>> {
    QUEUE.get_or_init(start).as_ref()
}

/// One read thread per core.
fn thread_count() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// Starts the read threads; none if not one could be started (then the
/// work goes to tokio's blocking pool).
fn start() -> Option<mpsc::Sender<Job>> {
    let (jobs, waiting) = mpsc::channel::<Job>();
    let waiting = Arc::new(Mutex::new(waiting));
    let started = (0..thread_count())
        .filter(|_| {
            let waiting = waiting.clone();
            std::thread::Builder::new()
                .name("cairn-mvcc-read".into())
                .spawn(move || serve(&waiting))
                .is_ok()
        })
        .count();
    (started > 0).then_some(jobs)
}

fn serve(waiting: &Mutex<mpsc::Receiver<Job>>) {
    if let Err(error) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICENESS)
    {
        tracing::warn!(%error, "a read thread runs at the default priority");
    }
    loop {
        // One thread waits on the queue at a time; the others on the lock.
        let job = match waiting.lock() {
            Ok(waiting) => waiting.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else {
            return;
        };
        // A job that panics drops its answer; the thread goes on.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
    }
}

/// Runs `work` on a read thread and waits for it without holding an async
/// worker. `None` when it did not finish (it panicked).
pub(crate) async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let Some(jobs) = queue() else {
        return tokio::task::spawn_blocking(work).await.ok();
    };
    let (answer, answered) = oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = answer.send(work());
    });
    jobs.send(job).ok()?;
    answered.await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_a_thread_of_lower_priority_and_answers() {
        let before = rustix::process::getpriority_process(None).expect("this thread's priority");
        let (priority, name) = run(|| {
            (
                rustix::process::getpriority_process(Some(rustix::thread::gettid())),
                std::thread::current().name().map(str::to_owned),
            )
        })
        .await
        .expect("the work finished");
        assert_eq!(name.as_deref(), Some("cairn-mvcc-read"));
        assert_eq!(
            priority.expect("the read thread's priority"),
            (before + NICENESS).min(19)
        );
    }

    #[tokio::test]
    async fn a_panicking_job_answers_none_and_the_threads_go_on() {
        let panicked = run(|| -> u32 { panic!("on purpose") }).await;
        assert_eq!(panicked, None);
        for _ in 0..thread_count() * 2 {
            assert_eq!(run(|| 7).await, Some(7));
        }
    }
}
