//! Threads that each run one current-thread tokio runtime: the shape of every driver
//! thread (a media shard, the ICE-TCP acceptor, the TURN relay).

use std::fmt::Display;
use std::future::Future;
use std::io;

use tracing::error;

/// Runs the future `make` returns on a new thread `name`, in a current-thread runtime with
/// a `LocalSet` (so its tasks may share `Rc`s and need not be `Send`); logs how it ends.
pub fn spawn_thread<F, Fut, E>(name: String, make: F) -> io::Result<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let thread = name.clone();
    std::thread::Builder::new().name(name).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                error!("{thread}: cannot start its runtime: {e}");
                return;
            }
        };
        let local = tokio::task::LocalSet::new();
        if let Err(e) = local.block_on(&runtime, make()) {
            error!("{thread} stopped: {e:#}");
        }
    })?;
    Ok(())
}
