//! File descriptors: how many client connections the process can take
//! without running out of them for its own files and links (the database,
//! Redis, other nodes), which is what MAX_CONNECTIONS defaults to.

/// The connection caps, from the configuration and the process's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections served in full.
    pub max_connections: usize,
    /// Connections past it still accepted for /healthz, /readyz, /metrics.
    pub reserve: usize,
}

/// Raises the soft descriptor limit to the hard one: the soft limit
/// exists for programs that use `select()`, which this one does not, and
/// is often 1024, far below what a socket server needs. Answers the limit
/// now in force (`None` where there is none to read).
pub fn raise_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit and setrlimit only read and write the struct
        // they are given.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return None;
            }
            if limit.rlim_cur < limit.rlim_max {
                let soft = limit.rlim_cur;
                limit.rlim_cur = limit.rlim_max;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    log::info!("raised the descriptor limit from {soft} to {}", limit.rlim_max);
                } else {
                    limit.rlim_cur = soft;
                }
            }
        }
        // rlim_t is u64 on Linux, not on every Unix.
        #[allow(clippy::unnecessary_cast)]
        Some(limit.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    None
}

/// Descriptors the process has open now (`None` where that cannot be seen).
pub fn open_now() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|dir| dir.count())
}

/// MAX_CONNECTIONS, or when it is 0 what the descriptor limit leaves once
/// those open now and FD_RESERVE are set aside; the reserve is half of
/// FD_RESERVE (the other half is for the process's own descriptors).
pub fn connection_limits(config: &crate::config::Config) -> ConnectionLimits {
    let limit = raise_limit();
    let open = open_now().unwrap_or(64);
    let reserve = config.fd_reserve / 2;
    let max_connections = match (config.max_connections, limit) {
        (0, Some(limit)) => {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            limit.saturating_sub(open).saturating_sub(config.fd_reserve).max(1)
        }
        // No limit to read: no cap but the configured one.
        (0, None) => usize::MAX,
        (max, _) => {
            if let Some(limit) = limit
                && (max + config.fd_reserve + open) as u64 > limit
            {
                log::warn!(
                    "MAX_CONNECTIONS={max} with FD_RESERVE={} and {open} descriptors open is past the \
                     descriptor limit ({limit}): accept() will fail before the limit is reached",
                    config.fd_reserve
                );
            }
            max
        }
    };
    log::info!(
        "connections: {max_connections} served in full, {reserve} more for /healthz, /readyz and /metrics \
         (descriptor limit {}, {open} open at start, FD_RESERVE {})",
        limit.map_or("none".to_string(), |l| l.to_string()),
        config.fd_reserve
    );
    ConnectionLimits { max_connections, reserve }
}
