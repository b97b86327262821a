//! The open-file limit: raised to its hard limit at start, and the connection budget that
//! follows from it.

/// Connections per listener when nothing else limits them.
const MAX_CONNECTIONS_DEFAULT: usize = 4096;

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit and logs both values.
/// Returns the soft limit now in force, `None` when it cannot be read.
pub fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given, which lives on this stack frame.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, "cannot read the open-file limit (RLIMIT_NOFILE)");
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere.
    let (soft, hard) = (limit.rlim_cur as u64, limit.rlim_max as u64);
    if soft >= hard {
        tracing::info!(soft, hard, "open-file limit (RLIMIT_NOFILE) is already at its hard limit");
        return Some(soft);
    }
    let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, soft, hard, "cannot raise the open-file limit (RLIMIT_NOFILE) to its hard limit");
        return Some(soft);
    }
    tracing::info!(old = soft, new = hard, "raised the open-file limit (RLIMIT_NOFILE) to its hard limit");
    Some(hard)
}

/// `max_connections` of a listener that sets none: 4096, or less so that `listeners` listeners
/// together hold at most half of `open_files` (the other half is for exporters, stores, logs and
/// the connections over a limit, which are accepted only to be closed).
pub fn default_max_connections(open_files: Option<u64>, listeners: usize) -> usize {
    let Some(open_files) = open_files else { return MAX_CONNECTIONS_DEFAULT };
    let share = open_files / 2 / listeners.max(1) as u64;
    usize::try_from(share).unwrap_or(usize::MAX).clamp(1, MAX_CONNECTIONS_DEFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_stays_under_half_the_open_file_limit() {
        assert_eq!(default_max_connections(Some(1 << 20), 3), 4096);
        assert_eq!(default_max_connections(Some(1024), 3), 170);
        assert_eq!(default_max_connections(Some(1024), 0), 512);
        assert_eq!(default_max_connections(Some(2), 3), 1);
        assert_eq!(default_max_connections(None, 3), 4096);
    }
}
