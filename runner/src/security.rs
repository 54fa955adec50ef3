//! Capabilities (Docker's default set, with the `caps` crate) and Docker's
//! default seccomp profile as an allowlist ([`profile`], compiled to BPF by
//! [`filter`]; see docs/security.md for how it is compared with moby's).

mod bpf;
mod filter;
mod profile;
mod syscalls;

pub use filter::FilterError;

use caps::{CapSet, Capability, CapsHashSet};
/// Docker's default capabilities (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// Errors while dropping privileges.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A capability set could not be changed.
    #[error("failed to reduce the {set} capability set")]
    Caps {
        /// Which set.
        set: &'static str,
        /// The cause.
        #[source]
        source: caps::errors::CapsError,
    },
    /// The seccomp filter could not be built.
    #[error("failed to build the default seccomp filter")]
    Seccomp(#[from] FilterError),
}

fn default_set() -> CapsHashSet {
    DEFAULT_CAPABILITIES.iter().copied().collect()
}

/// Reduce the bounding set to Docker's default and clear the inheritable and
/// ambient sets. Must run while still privileged, before setuid.
///
/// After exec, root gets exactly the bounding set (the kernel treats root's
/// file capabilities as full); another user gets none, as with Docker.
pub(crate) fn drop_bounding_set() -> Result<(), SecurityError> {
    let keep = default_set();
    for cap in caps::all() {
        if !keep.contains(&cap) {
            // Capabilities this kernel does not know are absent already.
            if let Err(source) = caps::drop(None, CapSet::Bounding, cap) {
                if caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
                    return Err(SecurityError::Caps {
                        set: "bounding",
                        source,
                    });
                }
            }
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|source| SecurityError::Caps {
        set: "ambient",
        source,
    })?;
    caps::clear(None, CapSet::Inheritable).map_err(|source| SecurityError::Caps {
        set: "inheritable",
        source,
    })
}

/// Reduce the effective and permitted sets to the default (root steps).
pub(crate) fn limit_root_capabilities() -> Result<(), SecurityError> {
    let keep = default_set();
    caps::set(None, CapSet::Effective, &keep).map_err(|source| SecurityError::Caps {
        set: "effective",
        source,
    })?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|source| SecurityError::Caps {
        set: "permitted",
        source,
    })
}

/// The capability names the seccomp profile is resolved against: Docker's
/// default set, or every capability for `all_capabilities`.
fn step_caps(all_capabilities: bool) -> Vec<String> {
    let caps: Vec<Capability> = if all_capabilities {
        caps::all().into_iter().collect()
    } else {
        DEFAULT_CAPABILITIES.to_vec()
    };
    caps.iter().map(|c| c.to_string()).collect()
}

/// Docker's default seccomp profile for this host and a step with Docker's
/// default capabilities (or all of them), as BPF programs to install in order;
/// with `discard_syncs`, the flush calls succeed without doing anything
/// (`RunSpec::discard_syncs`).
pub(crate) fn default_seccomp_filters(
    all_capabilities: bool,
    discard_syncs: bool,
) -> Result<Vec<Vec<libc::sock_filter>>, SecurityError> {
    let mut target = filter::Context::host(step_caps(all_capabilities))?;
    target.discard_syncs = discard_syncs;
    Ok(vec![filter::compile(&target)?])
}

/// The same profile as a runtime-spec `linux.seccomp` object.
pub(crate) fn default_seccomp_oci(
    all_capabilities: bool,
    discard_syncs: bool,
) -> Result<serde_json::Value, SecurityError> {
    let mut target = filter::Context::host(step_caps(all_capabilities))?;
    target.discard_syncs = discard_syncs;
    Ok(filter::oci_json(&target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile_for_this_machine() {
        let programs = default_seccomp_filters(false, false).unwrap();
        assert_eq!(programs.len(), 1);
        assert!(programs.iter().all(|p| !p.is_empty() && p.len() < 4096));
    }

    #[test]
    fn default_set_is_dockers_fourteen() {
        assert_eq!(default_set().len(), 14);
        assert!(!default_set().contains(&Capability::CAP_SYS_ADMIN));
        assert!(!default_set().contains(&Capability::CAP_NET_ADMIN));
    }
}
