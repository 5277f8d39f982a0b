//! SIGTERM / Ctrl-C turned into a cancellation every task can wait on.

use tokio_util::sync::CancellationToken;
use tracing::info;

/// Cancels the returned token on SIGTERM or SIGINT.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = terminate => info!("SIGTERM: finishing running reconciles, then exiting"),
            _ = tokio::signal::ctrl_c() => info!("interrupted: finishing running reconciles, then exiting"),
        }
        cancel.cancel();
    });
    token
}
