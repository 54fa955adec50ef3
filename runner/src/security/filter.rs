//! Docker's default seccomp profile ([`super::profile`]) resolved for one
//! step (its capabilities, this host's architecture and kernel) and compiled
//! to a BPF program, or written as runtime-spec JSON for runc/crun.
//!
//! Why not a crate: seccompiler (rust-vmm) knows x86_64, aarch64 and riscv64
//! only and makes one program per architecture, so a 32-bit (`linux/386`)
//! program on an x86_64 host could not be let through with its own syscall
//! numbers; libseccomp-rs would do it but links the C libseccomp into every
//! hoist binary (and a `-dev` package into every build) for what is here a
//! few dozen lines of code generation over a table that has to be ours
//! anyway. The generated program is checked instruction by instruction by an
//! interpreter in the tests and by the kernel when it is installed.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::bpf::{arg_low, Asm, BpfError, Target, OFFSET_ARCH, OFFSET_NR};
use super::profile::{Action, Arg, Group, Op, DEFAULT_ERRNO, GROUPS};
use super::syscalls::SYSCALLS;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;

/// x32 calls carry this bit in their number, under AUDIT_ARCH_X86_64.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// One architecture the program recognises.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Section {
    /// `AUDIT_ARCH_*`.
    pub audit: u32,
    /// libseccomp's name, for runtime-spec JSON.
    pub scmp: &'static str,
    /// The column of [`SYSCALLS`].
    column: fn(&(&str, i32, i32, i32)) -> i32,
    /// Refuse x32 calls (numbers with [`X32_SYSCALL_BIT`]).
    deny_x32: bool,
}

const X86_64: Section = Section {
    audit: AUDIT_ARCH_X86_64,
    scmp: "SCMP_ARCH_X86_64",
    column: |r| r.1,
    deny_x32: true,
};
const I386: Section = Section {
    audit: AUDIT_ARCH_I386,
    scmp: "SCMP_ARCH_X86",
    column: |r| r.2,
    deny_x32: false,
};
const AARCH64: Section = Section {
    audit: AUDIT_ARCH_AARCH64,
    scmp: "SCMP_ARCH_AARCH64",
    column: |r| r.3,
    deny_x32: false,
};

/// What the profile is resolved against, as moby resolves it when it
/// creates a container.
#[derive(Clone, Debug)]
pub(crate) struct Context {
    /// Go's GOARCH name of the host (moby matches `arches` against it).
    pub goarch: &'static str,
    /// The sections of the program: the host's native ABI first.
    pub sections: &'static [Section],
    /// The step's bounding set, as `CAP_*` names.
    pub caps: Vec<String>,
    /// The running kernel's (major, minor).
    pub kernel: (u32, u32),
    /// [`SYNC_CALLS`] return 0 without running (`RunSpec::discard_syncs`).
    pub discard_syncs: bool,
}

/// The calls that only flush data the kernel already holds to the disk. A
/// filter may answer them with success: what the caller reads back is the
/// same either way, only durability across a power loss differs. (`msync`
/// is left alone: it also carries `MS_INVALIDATE`, which changes what a
/// mapping sees.)
pub(crate) const SYNC_CALLS: &[&str] = &[
    "fsync",
    "fdatasync",
    "sync",
    "syncfs",
    "sync_file_range",
    "sync_file_range2",
    "arm_sync_file_range",
];

/// Errors while building the filter.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// hoist has no syscall table for this architecture.
    #[error("no seccomp filter for architecture {0}: hoist has syscall tables for x86_64 (with i386) and aarch64")]
    Arch(&'static str),
    /// The generator made a program the encoding cannot hold.
    #[error(transparent)]
    Bpf(#[from] BpfError),
}

impl Context {
    /// This host, with the given capabilities.
    pub(crate) fn host(caps: Vec<String>) -> Result<Context, FilterError> {
        let (goarch, sections): (&'static str, &'static [Section]) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", &[X86_64, I386]),
            "aarch64" => ("arm64", &[AARCH64]),
            other => return Err(FilterError::Arch(other)),
        };
        Ok(Context {
            goarch,
            sections,
            caps,
            kernel: kernel_version(),
            discard_syncs: false,
        })
    }
}

/// (major, minor) of the running kernel; (0, 0) if unreadable, which only
/// leaves out rules that need a newer kernel.
fn kernel_version() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| parse_kernel_version(&r))
        .unwrap_or((0, 0))
}

fn parse_kernel_version(release: &str) -> (u32, u32) {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// One rule of a syscall: all `args` hold => `action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    pub args: &'static [Arg],
    pub action: Action,
}

/// Whether moby keeps `group` for `target` (its `setupSeccomp` filter).
fn applies(group: &Group, target: &Context) -> bool {
    let has = |cap: &&str| target.caps.iter().any(|c| c == cap);
    let (ex, inc) = (&group.excludes, &group.includes);
    !(ex.arches.contains(&target.goarch)
        || ex.caps.iter().any(has)
        || ex.min_kernel.is_some_and(|k| target.kernel >= k)
        || (!inc.arches.is_empty() && !inc.arches.contains(&target.goarch))
        || !inc.caps.iter().all(has)
        || inc.min_kernel.is_some_and(|k| target.kernel < k))
}

/// The rules that apply to `target`, by syscall name, in profile order.
pub(crate) fn resolve(target: &Context) -> BTreeMap<&'static str, Vec<Rule>> {
    let mut out: BTreeMap<&'static str, Vec<Rule>> = BTreeMap::new();
    for g in GROUPS.iter().filter(|g| applies(g, target)) {
        for name in g.names {
            out.entry(name).or_default().push(Rule {
                args: g.args,
                action: g.action,
            });
        }
    }
    if target.discard_syncs {
        // Only calls the profile lets through: one it refuses stays refused.
        for (name, rules) in out.iter_mut() {
            if SYNC_CALLS.contains(name) {
                *rules = vec![DISCARD];
            }
        }
    }
    out
}

/// What a discarded flush does: nothing, successfully.
const DISCARD: Rule = Rule {
    args: &[],
    action: Action::Errno(0),
};

/// What the program does for one syscall number.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    Ret(u32),
    Check(Vec<Rule>),
}

fn ret_of(action: Action) -> u32 {
    match action {
        Action::Allow => RET_ALLOW,
        Action::Errno(e) => RET_ERRNO | (e & 0xffff),
    }
}

fn verdict(rules: &[Rule]) -> Verdict {
    // An unconditional rule covers every conditional one (libseccomp keeps
    // the broadest rule of a syscall).
    match rules.iter().find(|r| r.args.is_empty()) {
        Some(r) => Verdict::Ret(ret_of(r.action)),
        None => Verdict::Check(rules.to_vec()),
    }
}

/// Number ranges with one verdict each: `(first number, verdict)`, sorted,
/// the last reaching to `u32::MAX`. Numbers not in the profile fail with
/// EPERM, numbers above every syscall the profile names with ENOSYS, so
/// that libc falls back from syscalls newer than the profile (as runc does
/// for Docker, e.g. fchmodat2 -> fchmodat).
fn ranges(section: &Section, rules: &BTreeMap<&'static str, Vec<Rule>>) -> Vec<(u32, Verdict)> {
    let number = |name: &str| {
        SYSCALLS
            .iter()
            .find(|r| r.0 == name)
            .map(|r| (section.column)(r))
            .and_then(|n| u32::try_from(n).ok())
    };
    let newest = SYSCALLS
        .iter()
        .filter_map(|r| u32::try_from((section.column)(r)).ok())
        .max()
        .unwrap_or(0);
    let by_number: BTreeMap<u32, Verdict> = rules
        .iter()
        .filter_map(|(name, rules)| Some((number(name)?, verdict(rules))))
        .collect();
    let deny = Verdict::Ret(RET_ERRNO | DEFAULT_ERRNO);
    let mut out: Vec<(u32, Verdict)> = Vec::new();
    let mut push = |nr: u32, v: Verdict| {
        if out.last().map(|(_, last)| last) != Some(&v) || matches!(v, Verdict::Check(_)) {
            out.push((nr, v));
        }
    };
    for nr in 0..=newest {
        push(nr, by_number.get(&nr).cloned().unwrap_or(deny.clone()));
    }
    push(newest + 1, Verdict::Ret(RET_ERRNO | libc::ENOSYS as u32));
    out
}

/// Argument checks compare the low 32 bits: every argument the profile
/// filters on is an `int` or has its flags there (personality, socket's
/// domain, clone's flags), and the kernel reads only those bits, so upper
/// bits set by a caller cannot slip a value past the check.
fn emit_rules(asm: &mut Asm, rules: &[Rule]) {
    for rule in rules {
        let next = asm.label();
        for arg in rule.args {
            asm.load(arg_low(arg.index));
            let (value, value_two) = (arg.value as u32, arg.value_two as u32);
            match arg.op {
                Op::Eq => asm.jeq(value, Target::Next, Target::To(next)),
                Op::Ne => asm.jeq(value, Target::To(next), Target::Next),
                Op::MaskedEq => {
                    asm.and(value);
                    asm.jeq(value_two, Target::Next, Target::To(next));
                }
            }
        }
        asm.ret(ret_of(rule.action));
        asm.bind(next);
    }
    asm.ret(RET_ERRNO | DEFAULT_ERRNO);
}

/// A binary search over the ranges (`A` holds the syscall number).
fn emit_tree(asm: &mut Asm, ranges: &[(u32, Verdict)]) {
    if let [(_, v)] = ranges {
        match v {
            Verdict::Ret(r) => asm.ret(*r),
            Verdict::Check(rules) => emit_rules(asm, rules),
        }
        return;
    }
    let mid = ranges.len() / 2;
    let (upper, lower) = (asm.label(), asm.label());
    asm.jge(ranges[mid].0, Target::To(upper), Target::Next);
    asm.jump(lower);
    asm.bind(upper);
    emit_tree(asm, &ranges[mid..]);
    asm.bind(lower);
    emit_tree(asm, &ranges[..mid]);
}

/// The BPF program for `target`.
pub(crate) fn compile(target: &Context) -> Result<Vec<libc::sock_filter>, FilterError> {
    let rules = resolve(target);
    let mut asm = Asm::default();
    asm.load(OFFSET_ARCH);
    let labels: Vec<_> = target.sections.iter().map(|_| asm.label()).collect();
    for (section, label) in target.sections.iter().zip(&labels) {
        let other = asm.label();
        asm.jeq(section.audit, Target::Next, Target::To(other));
        asm.jump(*label);
        asm.bind(other);
    }
    // An ABI the filter has no table for (e.g. 32-bit arm on arm64):
    // numbers would mean other calls, so nothing may run.
    asm.ret(RET_KILL_PROCESS);
    for (section, label) in target.sections.iter().zip(labels) {
        asm.bind(label);
        asm.load(OFFSET_NR);
        if section.deny_x32 {
            let native = asm.label();
            asm.jge(X32_SYSCALL_BIT, Target::Next, Target::To(native));
            asm.ret(RET_ERRNO | DEFAULT_ERRNO);
            asm.bind(native);
        }
        emit_tree(&mut asm, &ranges(section, &rules));
    }
    Ok(asm.finish()?)
}

/// The same profile as a runtime-spec `linux.seccomp` object (what Docker
/// hands runc: groups already resolved for the step's capabilities).
pub(crate) fn oci_json(target: &Context) -> Value {
    let mut syscalls = Vec::new();
    let discarded = |name: &&str| target.discard_syncs && SYNC_CALLS.contains(name);
    let mut discard: Vec<&str> = Vec::new();
    for g in GROUPS.iter().filter(|g| applies(g, target)) {
        // libseccomp takes one action per call: a discarded flush leaves its
        // group for the entry of its own below.
        let names: Vec<&str> = g.names.iter().copied().filter(|n| !discarded(n)).collect();
        discard.extend(g.names.iter().copied().filter(discarded));
        if names.is_empty() {
            continue;
        }
        let mut entry = json!({"names": names});
        match g.action {
            Action::Allow => entry["action"] = json!("SCMP_ACT_ALLOW"),
            Action::Errno(e) => {
                entry["action"] = json!("SCMP_ACT_ERRNO");
                entry["errnoRet"] = json!(e);
            }
        }
        if !g.args.is_empty() {
            entry["args"] = g
                .args
                .iter()
                .map(|a| {
                    json!({
                        "index": a.index,
                        "value": a.value,
                        "valueTwo": a.value_two,
                        "op": match a.op {
                            Op::Eq => "SCMP_CMP_EQ",
                            Op::Ne => "SCMP_CMP_NE",
                            Op::MaskedEq => "SCMP_CMP_MASKED_EQ",
                        },
                    })
                })
                .collect();
        }
        syscalls.push(entry);
    }
    if !discard.is_empty() {
        discard.sort_unstable();
        discard.dedup();
        syscalls.push(json!({
            "names": discard,
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 0,
        }));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": DEFAULT_ERRNO,
        "architectures": target.sections.iter().map(|s| s.scmp).collect::<Vec<_>>(),
        "syscalls": syscalls,
    })
}

#[cfg(test)]
mod tests {
    use super::super::bpf::run;
    use super::*;
    use crate::security::step_caps;

    /// name -> [(args as (index, value, valueTwo, op), action)].
    type Resolved = BTreeMap<String, Vec<(Vec<(u64, u64, u64, String)>, String)>>;

    fn context(goarch: &'static str, all: bool, kernel: (u32, u32)) -> Context {
        let sections: &'static [Section] = match goarch {
            "amd64" => &[X86_64, I386],
            _ => &[AARCH64],
        };
        Context {
            goarch,
            sections,
            caps: step_caps(all),
            kernel,
            discard_syncs: false,
        }
    }

    /// moby's `setupSeccomp` filter, written against the JSON snapshot of
    /// its default.json (not against our table): name -> (args, action).
    fn moby_resolve(ctx: &Context) -> Resolved {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/testdata/moby-seccomp-default.json"
        ))
        .unwrap();
        let profile: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(profile["defaultErrnoRet"], 1);
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
                .unwrap_or_default()
        };
        let version = |v: &Value| v.as_str().map(parse_kernel_version);
        let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for g in profile["syscalls"].as_array().unwrap() {
            let (inc, ex) = (&g["includes"], &g["excludes"]);
            let has = |c: &String| ctx.caps.contains(c);
            if strings(&ex["arches"]).iter().any(|a| a == ctx.goarch)
                || strings(&ex["caps"]).iter().any(has)
                || version(&ex["minKernel"]).is_some_and(|k| ctx.kernel >= k)
                || (!strings(&inc["arches"]).is_empty()
                    && !strings(&inc["arches"]).iter().any(|a| a == ctx.goarch))
                || !strings(&inc["caps"]).iter().all(has)
                || version(&inc["minKernel"]).is_some_and(|k| ctx.kernel < k)
            {
                continue;
            }
            let action = match g["action"].as_str().unwrap() {
                "SCMP_ACT_ALLOW" => "allow".to_string(),
                "SCMP_ACT_ERRNO" => format!("errno {}", g["errnoRet"].as_u64().unwrap()),
                other => panic!("action {other}"),
            };
            let args: Vec<_> = g["args"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|a| {
                            (
                                a["index"].as_u64().unwrap(),
                                a["value"].as_u64().unwrap(),
                                a["valueTwo"].as_u64().unwrap_or(0),
                                a["op"].as_str().unwrap().to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            for name in strings(&g["names"]) {
                out.entry(name)
                    .or_default()
                    .push((args.clone(), action.clone()));
            }
        }
        out
    }

    fn ours(ctx: &Context) -> Resolved {
        resolve(ctx)
            .into_iter()
            .map(|(name, rules)| {
                let rules = rules
                    .iter()
                    .map(|r| {
                        let args = r
                            .args
                            .iter()
                            .map(|a| {
                                let op = match a.op {
                                    Op::Eq => "SCMP_CMP_EQ",
                                    Op::Ne => "SCMP_CMP_NE",
                                    Op::MaskedEq => "SCMP_CMP_MASKED_EQ",
                                };
                                (u64::from(a.index), a.value, a.value_two, op.to_string())
                            })
                            .collect();
                        let action = match r.action {
                            Action::Allow => "allow".to_string(),
                            Action::Errno(e) => format!("errno {e}"),
                        };
                        (args, action)
                    })
                    .collect();
                (name.to_string(), rules)
            })
            .collect()
    }

    #[test]
    fn table_resolves_as_mobys_default_json() {
        for goarch in ["amd64", "arm64", "s390x", "ppc64le", "riscv64"] {
            for all in [false, true] {
                for kernel in [(4, 4), (6, 1)] {
                    let mut ctx = context(goarch, all, kernel);
                    ctx.goarch = goarch;
                    let (want, got) = (moby_resolve(&ctx), ours(&ctx));
                    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
                    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
                    assert!(
                        missing.is_empty() && extra.is_empty(),
                        "{goarch} all={all} {kernel:?}: missing {missing:?}, extra {extra:?}"
                    );
                    assert_eq!(want, got, "{goarch} all={all} {kernel:?}");
                }
            }
        }
        // The default set: no mount, namespaces or keyrings; chroot yes.
        let allowed = ours(&context("amd64", false, (6, 1)));
        for name in [
            "mount", "unshare", "setns", "keyctl", "add_key", "bpf", "ptrace",
        ] {
            let kernel_old = ours(&context("amd64", false, (4, 4)));
            assert!(
                !kernel_old.contains_key(name),
                "{name} allowed on 4.4 with default caps"
            );
            if name != "ptrace" {
                assert!(!allowed.contains_key(name), "{name} allowed");
            }
        }
        assert!(allowed.contains_key("chroot") && allowed.contains_key("ptrace"));
    }

    /// libseccomp's semantics of one rule on full 64-bit arguments.
    fn matches(rule: &Rule, args: &[u64; 6]) -> bool {
        rule.args.iter().all(|a| {
            let v = args[usize::from(a.index)];
            match a.op {
                Op::Eq => v == a.value,
                Op::Ne => v != a.value,
                Op::MaskedEq => v & a.value == a.value_two,
            }
        })
    }

    const SAMPLES: &[u64] = &[
        0,
        1,
        2,
        8,
        40,
        0x11,
        0x20000,
        0x20008,
        0x40000,
        0xffff_ffff,
        0x1000_0011,
        0x4000_0000,
        0x0002_0011,
        0x7E02_0000,
        0x0100_0011,
    ];

    #[test]
    fn program_gives_every_syscall_its_profile_verdict() {
        for all in [false, true] {
            let ctx = context("amd64", all, (6, 1));
            let program = compile(&ctx).unwrap();
            assert!(program.len() < 1024, "{} instructions", program.len());
            let rules = resolve(&ctx);
            for section in ctx.sections {
                let mut newest = 0;
                for row in SYSCALLS {
                    let Ok(nr) = u32::try_from((section.column)(row)) else {
                        continue;
                    };
                    newest = newest.max(nr);
                    for &arg0 in SAMPLES {
                        let args = [arg0, 0, 0, 0, 0, 0];
                        let want = match rules.get(row.0) {
                            None => RET_ERRNO | DEFAULT_ERRNO,
                            Some(r) => match r.iter().find(|r| matches(r, &args)) {
                                Some(r) => ret_of(r.action),
                                None => RET_ERRNO | DEFAULT_ERRNO,
                            },
                        };
                        assert_eq!(
                            run(&program, nr, section.audit, args),
                            want,
                            "{} ({nr}) on {} arg0={arg0:#x} all={all}",
                            row.0,
                            section.scmp
                        );
                    }
                }
                for nr in [newest + 1, newest + 100, X32_SYSCALL_BIT - 1] {
                    assert_eq!(
                        run(&program, nr, section.audit, [0; 6]),
                        RET_ERRNO | libc::ENOSYS as u32
                    );
                }
            }
            // x32: `write` with the x32 bit.
            assert_eq!(
                run(&program, X32_SYSCALL_BIT | 1, AUDIT_ARCH_X86_64, [0; 6]),
                RET_ERRNO | DEFAULT_ERRNO
            );
            assert_eq!(
                run(&program, 1, AUDIT_ARCH_AARCH64, [0; 6]),
                RET_KILL_PROCESS
            );
        }
    }

    #[test]
    fn argument_filters_and_capability_groups() {
        let default = compile(&context("amd64", false, (6, 1))).unwrap();
        let all = compile(&context("amd64", true, (6, 1))).unwrap();
        let x64 = |p: &[libc::sock_filter], nr: libc::c_long, arg0: u64| {
            run(p, nr as u32, AUDIT_ARCH_X86_64, [arg0, 0, 0, 0, 0, 0])
        };
        let eperm = RET_ERRNO | libc::EPERM as u32;
        let enosys = RET_ERRNO | libc::ENOSYS as u32;
        assert_eq!(x64(&default, libc::SYS_write, 0), RET_ALLOW);
        assert_eq!(x64(&default, libc::SYS_mount, 0), eperm);
        assert_eq!(x64(&all, libc::SYS_mount, 0), RET_ALLOW);
        assert_eq!(x64(&default, libc::SYS_keyctl, 0), eperm);
        assert_eq!(x64(&all, libc::SYS_keyctl, 0), eperm);
        assert_eq!(x64(&default, libc::SYS_clone3, 0), enosys);
        assert_eq!(x64(&all, libc::SYS_clone3, 0), RET_ALLOW);
        let newuser = libc::CLONE_NEWUSER as u64 | 0x11;
        assert_eq!(x64(&default, libc::SYS_clone, 0x11), RET_ALLOW);
        assert_eq!(x64(&default, libc::SYS_clone, newuser), eperm);
        assert_eq!(x64(&all, libc::SYS_clone, newuser), RET_ALLOW);
        assert_eq!(
            x64(&default, libc::SYS_socket, libc::AF_INET as u64),
            RET_ALLOW
        );
        assert_eq!(
            x64(&default, libc::SYS_socket, libc::AF_VSOCK as u64),
            eperm
        );
        // The kernel reads an int: upper bits do not hide AF_VSOCK.
        assert_eq!(
            x64(&default, libc::SYS_socket, 0xdead_0000_0000_0028),
            eperm
        );
        assert_eq!(x64(&default, libc::SYS_personality, 8), RET_ALLOW);
        assert_eq!(x64(&default, libc::SYS_personality, 0xffff_ffff), RET_ALLOW);
        // ADDR_NO_RANDOMIZE is not among Docker's values.
        assert_eq!(x64(&default, libc::SYS_personality, 0x0040000), eperm);
        // i386 numbers are their own: 4 is write there, 21 mount.
        let i386 = |nr: u32| run(&default, nr, AUDIT_ARCH_I386, [0; 6]);
        assert_eq!(i386(4), RET_ALLOW);
        assert_eq!(i386(21), eperm);
        assert_eq!(i386(102), RET_ALLOW, "socketcall");
    }

    #[test]
    fn table_numbers_match_the_kernel_headers() {
        let dir = "/usr/include/x86_64-linux-gnu/asm";
        let read = |file: &str| -> Option<BTreeMap<String, i32>> {
            let text = std::fs::read_to_string(format!("{dir}/{file}")).ok()?;
            Some(
                text.lines()
                    .filter_map(|l| {
                        let mut w = l.strip_prefix("#define __NR_")?.split_whitespace();
                        Some((w.next()?.to_string(), w.next()?.parse().ok()?))
                    })
                    .collect(),
            )
        };
        let (Some(x64), Some(x86)) = (read("unistd_64.h"), read("unistd_32.h")) else {
            eprintln!("skipped: no kernel headers in {dir} (linux-libc-dev) to check against");
            return;
        };
        for (name, n64, n32, _) in SYSCALLS {
            assert_eq!(x64.get(*name).copied().unwrap_or(-1), *n64, "{name} x86_64");
            assert_eq!(x86.get(*name).copied().unwrap_or(-1), *n32, "{name} i386");
        }
        // Every name of the profile that the x86 headers know has a row.
        for g in GROUPS {
            for name in g.names {
                if x64.contains_key(*name) || x86.contains_key(*name) {
                    assert!(SYSCALLS.iter().any(|r| r.0 == *name), "{name} has no row");
                }
            }
        }
    }

    #[test]
    fn oci_json_fits_the_runtime_spec() {
        let ctx = context("amd64", false, (6, 1));
        let value = oci_json(&ctx);
        let seccomp: oci_spec::runtime::LinuxSeccomp =
            serde_json::from_value(value.clone()).unwrap();
        assert_eq!(seccomp.default_errno_ret(), Some(1));
        assert_eq!(
            value["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
        );
        let names = |v: &Value| -> Vec<String> {
            v["syscalls"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| s["names"].as_array().unwrap().clone())
                .map(|n| n.as_str().unwrap().to_string())
                .collect()
        };
        let default_names = names(&value);
        assert!(!default_names.contains(&"mount".to_string()));
        assert!(default_names.contains(&"chroot".to_string()));
        let clone = value["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["names"] == json!(["clone"]))
            .unwrap();
        assert_eq!(clone["args"][0]["value"], CLONE_NAMESPACE_FLAGS_FOR_TEST);
        let all = oci_json(&context("amd64", true, (6, 1)));
        assert!(names(&all).contains(&"mount".to_string()));
    }

    #[test]
    fn discarded_flushes_succeed_and_nothing_else_changes() {
        let plain = context("amd64", false, (6, 1));
        let mut discarding = plain.clone();
        discarding.discard_syncs = true;
        let (before, after) = (compile(&plain).unwrap(), compile(&discarding).unwrap());
        let x64 = |p: &[libc::sock_filter], nr: libc::c_long| {
            run(p, nr as u32, AUDIT_ARCH_X86_64, [3, 0, 0, 0, 0, 0])
        };
        for nr in [
            libc::SYS_fsync,
            libc::SYS_fdatasync,
            libc::SYS_sync,
            libc::SYS_syncfs,
            libc::SYS_sync_file_range,
        ] {
            assert_eq!(x64(&before, nr), RET_ALLOW, "{nr} without discarding");
            // SECCOMP_RET_ERRNO with 0: the call returns 0 and never runs.
            assert_eq!(x64(&after, nr), RET_ERRNO, "{nr} discarded");
        }
        // i386's fsync (118) too: a 32-bit program flushes through its own numbers.
        assert_eq!(
            run(&after, 118, AUDIT_ARCH_I386, [3, 0, 0, 0, 0, 0]),
            RET_ERRNO
        );
        for nr in [libc::SYS_write, libc::SYS_msync, libc::SYS_openat] {
            assert_eq!(x64(&after, nr), RET_ALLOW, "{nr}");
        }
        assert_eq!(x64(&after, libc::SYS_mount), RET_ERRNO | libc::EPERM as u32);
        let (a, b) = (resolve(&plain), resolve(&discarding));
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (name, rules) in &a {
            if !SYNC_CALLS.contains(name) {
                assert_eq!(Some(rules), b.get(name), "{name}");
            }
        }

        // The runtime-spec form: one entry with errno 0, the calls in no other.
        let value = oci_json(&discarding);
        let _: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(value.clone()).unwrap();
        let entries = value["syscalls"].as_array().unwrap();
        let holding = |name: &str| -> Vec<&Value> {
            entries
                .iter()
                .filter(|e| e["names"].as_array().unwrap().iter().any(|n| n == name))
                .collect()
        };
        for name in ["fsync", "fdatasync", "sync", "syncfs", "sync_file_range"] {
            let found = holding(name);
            assert_eq!(found.len(), 1, "{name} in {found:?}");
            assert_eq!(found[0]["action"], "SCMP_ACT_ERRNO", "{name}");
            assert_eq!(found[0]["errnoRet"], 0, "{name}");
        }
        assert_eq!(holding("write").len(), 1);
        assert_eq!(holding("write")[0]["action"], "SCMP_ACT_ALLOW");
    }

    const CLONE_NAMESPACE_FLAGS_FOR_TEST: u64 = super::super::profile::CLONE_NAMESPACE_FLAGS;

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v1147\n"), (6, 18));
        assert_eq!(parse_kernel_version("4.8"), (4, 8));
        assert_eq!(parse_kernel_version("garbage"), (0, 0));
    }
}
