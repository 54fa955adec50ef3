//! Running a step through an external OCI runtime (`runc`, `crun`): the same
//! spec, translated to a runtime-spec `config.json` checked against the
//! `oci-spec` crate's types.
//!
//! The init is started in a private mount namespace only; there it mounts the
//! root (when given as mounts) and the secrets' tmpfs, resolves the user to
//! numeric ids through the image's files, writes the bundle and execs the
//! runtime, which makes the step's other namespaces itself. The default
//! network is the exception: the init is started in a new network namespace
//! that slirp4netns serves (as for the embedded runtime, see `net.rs`), and
//! config.json asks for no network namespace, so the container shares it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cgroup::ALLOWED_DEVICES;
use crate::init::InitConfig;
use crate::rootfs::{mount_root, LinuxSyscalls, RootfsError, MASKED_PATHS, READONLY_PATHS};
use crate::security::{SecurityError, DEFAULT_CAPABILITIES};
use crate::spec::{Limits, Mount, NetworkMode};
use crate::user::{resolve_user, UserError};

/// What the init needs to hand a step to an external runtime.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ExternalPlan {
    /// The runtime binary.
    pub runtime: PathBuf,
    /// Bundle directory (config.json goes here).
    pub bundle: PathBuf,
    /// The runtime's `--root` state directory, private to this run.
    pub state: PathBuf,
    /// Container id.
    pub id: String,
    /// Network mode.
    pub network: NetworkMode,
    /// Limits (enforced by the runner's own cgroup around the runtime; see docs).
    pub limits: Limits,
}

/// Errors while handing a step to an external runtime.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    /// The root could not be mounted.
    #[error("failed to prepare the root filesystem for the runtime")]
    Rootfs(#[from] RootfsError),
    /// The seccomp profile could not be built.
    #[error("failed to build the seccomp profile for the runtime")]
    Seccomp(#[from] SecurityError),
    /// The user could not be resolved.
    #[error("failed to resolve the step's user")]
    User(#[from] UserError),
    /// The generated configuration does not fit the runtime-spec types.
    #[error("generated config.json does not match the OCI runtime spec")]
    Spec(#[source] serde_json::Error),
    /// The bundle could not be written.
    #[error("failed to write the OCI bundle at {path}")]
    Bundle {
        /// The bundle path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The runtime could not be executed.
    #[error("failed to execute the OCI runtime {path}")]
    Exec {
        /// The runtime.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn cap_names() -> Vec<String> {
    DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
}

/// Build the runtime-spec configuration (as checked JSON).
pub(crate) fn runtime_config(
    config: &InitConfig,
    plan: &ExternalPlan,
    uid: u32,
    gid: u32,
    additional_gids: &[u32],
    env: &[String],
) -> Result<Value, ExternalError> {
    let root_plan = &config.plan;
    let caps = if config.all_capabilities {
        // What this process may still grant: asking the runtime for a
        // capability outside our bounding set fails the whole step (EPERM
        // from capset), as on hosts that drop e.g. CAP_SYS_RESOURCE.
        let mut all: Vec<String> = caps::read(None, caps::CapSet::Bounding)
            .unwrap_or_else(|_| caps::all())
            .iter()
            .map(|c| c.to_string())
            .collect();
        all.sort();
        all
    } else {
        cap_names()
    };
    let effective: Vec<String> = if uid == 0 { caps.clone() } else { Vec::new() };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", root_plan.shm_size_option()]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": if root_plan.privileged {
            vec!["nosuid", "noexec", "nodev"]
        } else {
            vec!["nosuid", "noexec", "nodev", "ro"]
        }}),
    ];
    for device in &root_plan.host_devices {
        mounts.push(json!({"destination": device, "type": "bind", "source": device, "options": ["bind", "rprivate"]}));
    }
    for (path, host) in &root_plan.etc_files {
        mounts.push(json!({"destination": path, "type": "bind", "source": host, "options": ["rbind", "rprivate"]}));
    }
    for (index, m) in root_plan.mounts.iter().enumerate() {
        mounts.push(match m {
            Mount::Bind { source, target, readonly } => {
                let mut options = vec!["rbind", "rprivate"];
                if *readonly {
                    options.push("ro");
                }
                json!({"destination": target, "type": "bind", "source": source, "options": options})
            }
            Mount::Tmpfs { target, size, mode } => {
                let mut options = vec![
                    "nosuid".to_string(),
                    "nodev".to_string(),
                    format!("mode={:o}", mode.unwrap_or(0o1777)),
                ];
                if let Some(size) = size {
                    options.push(format!("size={size}"));
                }
                json!({"destination": target, "type": "tmpfs", "source": "tmpfs", "options": options})
            }
            Mount::Secret { target, .. } => json!({
                "destination": target, "type": "bind",
                "source": root_plan.secrets_dir.join(index.to_string()),
                "options": ["bind", "rprivate", "ro"]
            }),
            Mount::SshAgent { socket, target } => {
                json!({"destination": target, "type": "bind", "source": socket, "options": ["bind", "rprivate"]})
            }
        });
    }
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    // Default: the container stays in the runtime's network namespace, the
    // private one the runner made and slirp4netns serves; Host: the host's.
    if plan.network == NetworkMode::None {
        namespaces.push(json!({"type": "network"}));
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "maskedPaths": if root_plan.privileged { &[][..] } else { MASKED_PATHS },
        "readonlyPaths": if root_plan.privileged { &[][..] } else { READONLY_PATHS },
        // Relative: nested under the runtime's own cgroup, which is the
        // step's cgroup made by the runner where it manages the controller
        // (limits and accounting live there), and the hierarchy's root for
        // the other v1 controllers: hence a name unique to this run.
        "cgroupsPath": plan.id,
    });
    let mut resources = json!({});
    if let Some(cpus) = plan.limits.cpus {
        let quota = (cpus * 100_000.0).round().max(1000.0) as i64;
        resources["cpu"] = json!({"quota": quota, "period": 100_000u64});
    }
    if let Some(pids) = plan.limits.pids {
        resources["pids"] = json!({"limit": pids});
    }
    if root_plan.privileged {
        // runc's default device rules would refuse the host devices bound in.
        resources["devices"] = json!([{"allow": true, "access": "rwm"}]);
    } else {
        // Docker's rules: deny all, then its default list (runc appends
        // the same list itself; stating it keeps crun and runc alike).
        let mut rules = vec![json!({"allow": false, "access": "rwm"})];
        for (kind, major, minor, access) in ALLOWED_DEVICES {
            let mut rule = json!({"allow": true, "type": kind.to_string(), "access": access});
            if let Some(major) = major {
                rule["major"] = json!(major);
            }
            if let Some(minor) = minor {
                rule["minor"] = json!(minor);
            }
            rules.push(rule);
        }
        resources["devices"] = json!(rules);
    }
    linux["resources"] = resources;
    if config.seccomp {
        linux["seccomp"] =
            crate::security::default_seccomp_oci(config.all_capabilities, config.discard_syncs)?;
    }
    let value = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid, "additionalGids": additional_gids},
            "args": config.argv,
            "env": env,
            "cwd": config.cwd,
            "capabilities": {
                "bounding": caps, "effective": effective, "permitted": effective,
                "inheritable": [], "ambient": []
            },
            "noNewPrivileges": config.no_new_privileges,
            "rlimits": config.ulimits.iter().map(|l| json!({
                "type": format!("RLIMIT_{}", l.name.name().to_uppercase()),
                "soft": u64::try_from(l.soft).unwrap_or(u64::MAX),
                "hard": u64::try_from(l.hard).unwrap_or(u64::MAX),
            })).collect::<Vec<_>>()
        },
        "root": {"path": root_plan.root, "readonly": false},
        "hostname": root_plan.hostname,
        "mounts": mounts,
        "linux": linux,
    });
    // Round-trip through the oci-spec types: a field the spec does not know
    // or a wrong shape fails here, not inside the runtime.
    let spec: oci_spec::runtime::Spec =
        serde_json::from_value(value).map_err(ExternalError::Spec)?;
    serde_json::to_value(&spec).map_err(ExternalError::Spec)
}

/// In the init (private mount namespace): prepare and exec the runtime.
/// Returns only on failure.
pub(crate) fn exec_runtime(config: &InitConfig, plan: &ExternalPlan) -> ExternalError {
    match prepare_bundle(config, plan) {
        Ok(()) => {}
        Err(e) => return e,
    }
    let mut args: Vec<String> = vec![
        plan.runtime.display().to_string(),
        "--root".into(),
        plan.state.display().to_string(),
    ];
    if is_crun(&plan.runtime) {
        // The runner already put this process in the step's cgroup (limits
        // and accounting live there); crun would refuse hybrid hierarchies.
        args.push("--cgroup-manager=disabled".into());
    }
    args.extend([
        "run".into(),
        "--bundle".into(),
        plan.bundle.display().to_string(),
        plan.id.clone(),
    ]);
    let env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    crate::sys::reset_signals();
    let source = crate::sys::execve(&plan.runtime, &args, &env);
    ExternalError::Exec {
        path: plan.runtime.clone(),
        source,
    }
}

fn is_crun(runtime: &Path) -> bool {
    runtime
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("crun"))
}

fn prepare_bundle(config: &InitConfig, plan: &ExternalPlan) -> Result<(), ExternalError> {
    let sys = LinuxSyscalls;
    mount_root(&sys, &config.plan)?;
    crate::rootfs::prepare_secrets(&sys, &config.plan)?;
    let root = &config.plan.root;
    let accounts = hoist_untrusted::Accounts::read_dir(root).map_err(UserError::from)?;
    let user = resolve_user(&config.user, &accounts)?;
    let mut env = config.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={}", crate::spec::DEFAULT_PATH));
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    let value = runtime_config(
        config,
        plan,
        user.uid,
        user.gid,
        &user.additional_gids,
        &env,
    )?;
    let bundle_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExternalError::Bundle { path, source }
    };
    std::fs::create_dir_all(&plan.bundle).map_err(bundle_err(&plan.bundle))?;
    std::fs::create_dir_all(&plan.state).map_err(bundle_err(&plan.state))?;
    let path = plan.bundle.join("config.json");
    let text = serde_json::to_vec_pretty(&value).map_err(ExternalError::Spec)?;
    std::fs::write(&path, text).map_err(bundle_err(&path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::RootPlan;

    #[test]
    fn config_json_fits_the_runtime_spec() {
        let config = InitConfig {
            all_capabilities: false,
            discard_syncs: false,
            tty: false,
            plan: RootPlan {
                root: "/bundle/rootfs".into(),
                root_mounts: None,
                hostname: "h".into(),
                new_net: true,
                etc_files: vec![("/etc/hosts".into(), "/run/x/hosts".into())],
                mounts: vec![Mount::Bind {
                    source: "/src".into(),
                    target: "/dst".into(),
                    readonly: true,
                }],
                secrets_dir: "/run/x/secrets".into(),
                privileged: false,
                host_devices: Vec::new(),
                shm_size: Some(128 << 20),
            },
            argv: vec!["sh".into()],
            env: vec!["A=1".into()],
            cwd: "/".into(),
            user: "app".into(),
            no_new_privileges: true,
            seccomp: true,
            external: None,
            ulimits: vec![crate::spec::Ulimit::parse("nofile=100:200").unwrap()],
        };
        let plan = ExternalPlan {
            runtime: "runc".into(),
            bundle: "/bundle".into(),
            state: "/state".into(),
            id: "hoist-1-2".into(),
            network: NetworkMode::None,
            limits: Limits {
                memory: Some(1 << 20),
                cpus: Some(0.5),
                pids: Some(9),
            },
        };
        let v = runtime_config(&config, &plan, 1000, 1000, &[10], &config.env).unwrap();
        assert_eq!(v["process"]["user"]["uid"], 1000);
        assert_eq!(
            v["process"]["rlimits"],
            json!([{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}])
        );
        let shm = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/dev/shm")
            .unwrap();
        assert!(
            shm["options"]
                .as_array()
                .unwrap()
                .contains(&json!("size=131072k")),
            "{shm}"
        );
        assert_eq!(v["process"]["user"]["additionalGids"][0], 10);
        assert_eq!(
            v["process"]["capabilities"]["effective"]
                .as_array()
                .unwrap()
                .len(),
            0
        );
        assert_eq!(
            v["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
        assert_eq!(v["hostname"], "h");
        assert_eq!(v["linux"]["cgroupsPath"], "hoist-1-2");
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 50000);
        assert_eq!(v["linux"]["resources"]["pids"]["limit"], 9);
        assert!(v["linux"]["resources"].get("memory").is_none());
        let namespaces: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(namespaces.contains(&"network") && namespaces.contains(&"pid"));
        let dst = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/dst")
            .unwrap();
        assert!(dst["options"].as_array().unwrap().contains(&"ro".into()));
        let devices = v["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(devices[0], json!({"allow": false, "access": "rwm"}));
        assert!(devices.contains(
            &json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"})
        ));
        assert!(devices.contains(&json!({"allow": true, "type": "b", "access": "m"})));
        let seccomp = &v["linux"]["seccomp"];
        assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO");
        assert!(seccomp["syscalls"].as_array().unwrap().len() > 10);
    }
}
