//! Process hardening done once at start: no core dumps.
//!
//! A core dump of this process would hold every secret value, token and client secret it had in
//! memory. `RLIMIT_CORE` 0 stops the kernel writing one (a pipe `core_pattern` such as systemd-coredump
//! ignores the limit, so the process is also made non-dumpable: `PR_SET_DUMPABLE` 0, which also
//! keeps other unprivileged processes of the same user from attaching with ptrace or reading
//! `/proc/<pid>/mem`).

/// What [`disable_core_dumps`] achieved; failures are reported, not fatal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hardening {
    /// `RLIMIT_CORE` is now 0 (soft and hard).
    pub core_limit_zero: bool,
    /// `PR_SET_DUMPABLE` is now 0.
    pub not_dumpable: bool,
    /// What failed, for a warning.
    pub problems: Vec<String>,
}

/// Sets `RLIMIT_CORE` to 0 and the process non-dumpable. Call first thing in `main`.
pub fn disable_core_dumps() -> Hardening {
    let mut report = Hardening::default();
    match nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0) {
        Ok(()) => report.core_limit_zero = true,
        Err(e) => report
            .problems
            .push(format!("setrlimit(RLIMIT_CORE, 0): {e}")),
    }
    match nix::sys::prctl::set_dumpable(false) {
        Ok(()) => report.not_dumpable = true,
        Err(e) => report
            .problems
            .push(format!("prctl(PR_SET_DUMPABLE, 0): {e}")),
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_dumps_are_off_afterwards() {
        let report = disable_core_dumps();
        assert_eq!(report.problems, Vec::<String>::new());
        assert!(report.core_limit_zero && report.not_dumpable);
        assert_eq!(
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE).ok(),
            Some((0, 0))
        );
        assert_eq!(nix::sys::prctl::get_dumpable().ok(), Some(false));
    }
}
