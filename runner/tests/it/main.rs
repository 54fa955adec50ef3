//! Integration tests of hoist-runner. The test binary is also the sandbox
//! init (`init_if_requested` first) and a helper "hoist" for the leak test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

mod attach;
mod devices;
mod leaks;
mod limits;
mod mounts;
mod network;
mod rootless;
mod sandbox;
mod seccomp;
mod security;
mod util;

use libtest_mimic::{Arguments, Trial};
use util::Env;

fn main() {
    hoist_runner::init_if_requested();
    if leaks::helper_if_requested() || rootless::helper_if_requested() {
        return;
    }
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for env in Env::all() {
        let common: Vec<(&str, util::TestFn)> = vec![
            (
                "pid1_and_no_host_process",
                sandbox::pid1_and_no_host_process,
            ),
            ("hostname_and_etc_files", sandbox::hostname_and_etc_files),
            (
                "host_marker_file_invisible",
                sandbox::host_marker_file_invisible,
            ),
            ("proc_sys_dev", sandbox::proc_sys_dev),
            ("exit_codes_and_signals", sandbox::exit_codes_and_signals),
            (
                "output_is_streamed_in_order",
                sandbox::output_is_streamed_in_order,
            ),
            ("cancel_forwards_sigterm", sandbox::cancel_forwards_sigterm),
            (
                "network_none_has_only_lo_up",
                sandbox::network_none_has_only_lo_up,
            ),
            ("network_host_etc_files", sandbox::network_host_etc_files),
            (
                "default_network_is_private_with_egress",
                network::default_network_is_private_with_egress,
            ),
            (
                "host_network_is_the_hosts",
                network::host_network_is_the_hosts,
            ),
            (
                "slirp_ends_with_its_step",
                network::slirp_ends_with_its_step,
            ),
            ("user_ids_groups_home", security::user_ids_groups_home),
            (
                "capabilities_nnp_seccomp",
                security::capabilities_nnp_seccomp,
            ),
            ("privileged_sys_proc_dev", security::privileged_sys_proc_dev),
            (
                "seccomp_allowlist_on_the_kernel",
                seccomp::allowlist_on_the_kernel,
            ),
            ("seccomp_i386_program_runs", seccomp::i386_program_runs),
            (
                "mknod_nodes_cannot_be_opened",
                devices::mknod_nodes_cannot_be_opened,
            ),
            ("device_cgroup_rules", devices::device_cgroup_rules),
            ("bind_mounts_ro_rw", mounts::bind_mounts_ro_rw),
            ("tmpfs_mount", mounts::tmpfs_mount),
            (
                "secret_on_tmpfs_leaves_no_trace",
                mounts::secret_on_tmpfs_leaves_no_trace,
            ),
            ("ssh_agent_socket", mounts::ssh_agent_socket),
            (
                "overlay_root_layer_gains_nothing",
                mounts::overlay_root_layer_gains_nothing,
            ),
            ("dir_root_gains_no_stubs", mounts::dir_root_gains_no_stubs),
            (
                "memory_limit_oom_reported",
                limits::memory_limit_oom_reported,
            ),
            (
                "limits_written_and_usage_reported",
                limits::limits_written_and_usage_reported,
            ),
            ("pids_limit_enforced", limits::pids_limit_enforced),
        ];
        for (name, f) in common {
            let env = env.clone();
            trials.push(Trial::ignorable_test(
                format!("{}::{name}", env.name),
                move || env.trial(f),
            ));
        }
    }
    trials.push(Trial::ignorable_test(
        "embedded::sigkill_of_hoist_leaves_nothing",
        || util::outcome(leaks::sigkill_of_hoist_leaves_nothing),
    ));
    trials.push(Trial::ignorable_test(
        "embedded::setup_errors_are_reported",
        || util::outcome(sandbox::setup_errors_are_reported),
    ));
    trials.push(Trial::ignorable_test(
        "embedded::attached_stdin_tty_and_control",
        || util::outcome(attach::stdin_pipe_tty_and_control),
    ));
    trials.push(Trial::ignorable_test(
        "embedded::exec_failures_say_not_found_or_not_executable",
        || util::outcome(attach::exec_failures_say_not_found_or_not_executable),
    ));
    trials.push(Trial::ignorable_test(
        "rootless::as_unprivileged_user",
        || util::outcome(rootless::rootless_as_unprivileged_user),
    ));
    libtest_mimic::run(&args, trials).exit();
}
