//! CPU-bound work (HPKE, signatures) on tokio's blocking pool, off the async workers, so that
//! `/healthz` and every other route keep answering while batches are judged; and within one
//! call, spread over the cores with scoped threads.
//!
//! rayon would do the spreading too, but it keeps its own pool of threads beside tokio's; here
//! the work already runs on a blocking-pool thread, which [`par_parts`] splits for the length
//! of one call and no longer, so an idle server holds no extra threads and the two pools never
//! compete for the cores.

use crate::error::ServerError;

/// Runs `f` on tokio's blocking pool.
pub(crate) async fn cpu<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, ServerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ServerError::Stopping)
}

/// Runs `f` on one part of `items` per core at once (scoped threads), keeping the order.
/// Call it from the CPU pool, never from an async worker. (The settlement benchmark measures
/// the crypto pipeline with it too, so both use the cores the same way.)
pub fn par_parts<T: Sync, R: Send>(items: &[T], f: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    if threads < 2 || items.len() < 64 {
        return vec![f(items)];
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| f(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("settlement worker threads do not panic"))
            .collect()
    })
}

/// Maps `f` over `items` on every core, keeping the order (see [`par_parts`]).
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    par_parts(items, |part| part.iter().map(&f).collect::<Vec<R>>())
        .into_iter()
        .flatten()
        .collect()
}
