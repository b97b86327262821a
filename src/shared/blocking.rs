//! CPU work of milliseconds on the request or export path (inflating a large body, encoding and
//! compressing a bulk request) goes to tokio's blocking pool, so that an executor thread keeps
//! serving other requests and connections meanwhile.

/// The runtime dropped the work before it ran: it is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the runtime is shutting down")]
pub struct RuntimeShutdown;

/// Runs `work` on tokio's blocking pool and awaits its result. A panic in `work` resumes in the
/// caller, as if `work` had run inline.
pub async fn on_blocking_pool<T, F>(work: F) -> Result<T, RuntimeShutdown>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => Ok(value),
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(_) => Err(RuntimeShutdown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn work_runs_on_another_thread_and_its_panic_reaches_the_caller() {
        let caller = std::thread::current().id();
        let worker = on_blocking_pool(|| std::thread::current().id()).await.unwrap();
        assert_ne!(worker, caller, "the executor thread did not do the work");
        let panicked = tokio::spawn(on_blocking_pool(|| -> u8 { panic!("boom") })).await.unwrap_err();
        assert!(panicked.is_panic(), "a panic is not turned into an error");
    }
}
