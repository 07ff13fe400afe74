//! systemd's readiness protocol (`sd_notify`): one datagram per state change to the socket `NOTIFY_SOCKET` names
//! (a path, or `@name` in the abstract namespace). Without `NOTIFY_SOCKET` every call does nothing.
//!
//! Written here rather than with a crate: it is one `sendto` on a Unix datagram socket, and the crates add a
//! dependency for it. Does not own: when to send what (`crate::server`).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends `state` (e.g. `READY=1`, `STOPPING=1`) if systemd asked for notifications. Failures are logged once per
/// call and otherwise ignored: the service runs on without them.
pub(crate) fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let result = (|| -> std::io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        let addr = match path.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
            None => SocketAddr::from_pathname(&path)?,
        };
        socket.send_to_addr(state.as_bytes(), &addr)?;
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!(socket = %path, error = %e, "cannot notify systemd ({state})");
    }
}

/// `WATCHDOG_USEC` as systemd sets it for `WatchdogSec=`: pings go out at half that interval.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
