//! Socket plumbing shared by the load generator and the echo upstream: the open-files limit,
//! SO_REUSEPORT listeners (one per thread), outgoing connections bound to a chosen loopback source
//! address, and the per-thread monoio runtime. No WebSocket knowledge lives here.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// Reads into the spare capacity of `buf`, after the bytes it already holds, and returns the
/// buffer with its length grown by the bytes read. (monoio's `read(Vec)` writes from index 0 and
/// would overwrite unconsumed input, so every read goes through here.) Reserves a little space
/// first when `buf` is full, so a zero-byte read always means end of stream.
pub async fn read_more<S: monoio::io::AsyncReadRent>(
    io: &mut S,
    mut buf: Vec<u8>,
) -> (io::Result<usize>, Vec<u8>) {
    use monoio::buf::IoBufMut;
    if buf.len() == buf.capacity() {
        buf.reserve(buf.capacity().max(512));
    }
    let (len, cap) = (buf.len(), buf.capacity());
    let (res, slice) = io.read(buf.slice_mut(len..cap)).await;
    (res, slice.into_inner())
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit)?;
    }
    Ok(limit.current.unwrap_or(u64::MAX))
}

/// CPU time (user + system) this process has used so far, from `/proc/self/stat`.
pub fn process_cpu_time() -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_cpu_ticks(&stat).map(|ticks| {
        std::time::Duration::from_secs_f64(
            ticks as f64 / rustix::param::clock_ticks_per_second() as f64,
        )
    })
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line; the command name may hold spaces.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The number of worker threads to use when `--threads` is not given: one per available core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Runs `fut` to completion on a fresh single-threaded monoio runtime (io_uring when the kernel
/// allows it, epoll otherwise) with timers enabled.
pub fn block_on<F: Future>(fut: F) -> io::Result<F::Output> {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(4096)
        .enable_timer()
        .build()?;
    Ok(rt.block_on(fut))
}

/// Binds `count` listening sockets to the same address with SO_REUSEPORT so each worker thread
/// accepts on its own socket. Port 0 is resolved by the first bind and reused by the rest.
pub fn reuseport_listeners(
    addr: SocketAddr,
    count: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_tcp_nodelay(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&bound.into())?;
        socket.listen(4096)?;
        let listener: std::net::TcpListener = socket.into();
        bound = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// The source addresses to spread outgoing connections over: `127.0.0.1..=127.0.0.k` when the
/// target is an IPv4 loopback address (each source address has its own ephemeral port range),
/// otherwise a single `None` (let the kernel choose).
pub fn source_addresses(target: SocketAddr, k: usize) -> Vec<Option<IpAddr>> {
    match target.ip() {
        IpAddr::V4(ip) if ip.is_loopback() && k > 1 => (1..=k.min(254))
            .map(|last| Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last as u8))))
            .collect(),
        _ => vec![None],
    }
}

/// Opens a TCP connection to `target` from `source` (port chosen by the kernel), with TCP_NODELAY.
/// The connect is non-blocking, so a full accept queue never stalls the thread's other connections.
pub async fn connect(
    target: SocketAddr,
    source: Option<IpAddr>,
) -> io::Result<monoio::net::TcpStream> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) => {}
        Err(e) => return Err(e),
    }
    // A second handle on the socket, to read why a non-blocking connect failed (SO_ERROR: "connection refused"),
    // which asking the unconnected socket for its peer would hide behind ENOTCONN.
    let probe = socket.try_clone()?;
    let std_stream: std::net::TcpStream = socket.into();
    let stream = monoio::net::TcpStream::from_std(std_stream)?;
    stream.writable(false).await?;
    if let Some(e) = probe.take_error()? {
        return Err(e);
    }
    stream.peer_addr()?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_get_several_source_addresses() {
        let v4: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let addrs = source_addresses(v4, 4);
        assert_eq!(addrs.len(), 4);
        assert_eq!(addrs[3], Some("127.0.0.4".parse().unwrap()));
        let remote: SocketAddr = "192.0.2.1:80".parse().unwrap();
        assert_eq!(source_addresses(remote, 4), vec![None]);
    }

    #[test]
    fn cpu_ticks_parse_past_odd_command_names() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 1 1 1";
        assert_eq!(parse_cpu_ticks(stat), Some(12));
        assert!(process_cpu_time().is_some());
    }

    #[test]
    fn reuseport_listeners_share_one_port() {
        let ls = reuseport_listeners("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let port = ls[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(ls.iter().all(|l| l.local_addr().unwrap().port() == port));
    }
}
