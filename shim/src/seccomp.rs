//! The OCI `linux.seccomp` profile, compiled with libseccomp into a filter
//! that the container's process loads just before it execs the workload.
//!
//! Semantics follow runc's (libcontainer/seccomp): `SCMP_ACT_KILL` is
//! `SCMP_ACT_KILL_THREAD`; `SCMP_ACT_ERRNO` and `SCMP_ACT_TRACE` return
//! `errnoRet` (EPERM when absent); a rule whose action is the default action
//! is redundant and skipped; a syscall name this libseccomp does not know is
//! skipped (profiles list syscalls newer than some kernels and libraries);
//! the arguments of one rule are AND'ed, unless one argument index appears
//! more than once: then every argument is a rule of its own (OR'ed), as
//! runc does; libseccomp never sets no_new_privs itself (the spec's
//! `process.noNewPrivileges` decides). `SCMP_ACT_NOTIFY` needs a listener
//! (`listenerPath`), which idshift does not support: such a profile is
//! refused, never loaded without its notify rules.
//!
//! The profile is compiled (down to BPF) by the container's process before it
//! reports Ready, so a bad profile fails `create` with an error naming the
//! field; the filter is loaded at `start`, right before the exec.

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::LinuxSeccomp;
use serde::Deserialize;

/// The actions, operators and flags a profile may use (`-info` lists them).
pub const ACTIONS: [&str; 8] = [
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_LOG",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_TRAP",
];
pub const OPERATORS: [&str; 7] = [
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_LE",
    "SCMP_CMP_LT",
    "SCMP_CMP_MASKED_EQ",
    "SCMP_CMP_NE",
];
pub const FLAGS: [&str; 3] = [
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_TSYNC",
];

/// Syscall arguments are indexed 0 to 5.
const MAX_ARG_INDEX: u64 = 5;
/// The kernel's BPF_MAXINSNS: a longer filter is refused at load.
const MAX_BPF_INSNS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The profile is wrong or asks for what idshift does not do.
    #[error("linux.seccomp.{field}: {msg}")]
    Profile { field: String, msg: String },
    /// libseccomp refused something.
    #[error("seccomp: {what}: {source}")]
    Lib {
        what: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    #[error("seccomp: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn profile_err(field: impl Into<String>, msg: impl Into<String>) -> Error {
    Error::Profile {
        field: field.into(),
        msg: msg.into(),
    }
}

fn lib(what: impl Into<String>) -> impl FnOnce(libseccomp::error::SeccompError) -> Error {
    let what = what.into();
    move |source| Error::Lib { what, source }
}

/// The profile as the OCI spec writes it, with every enumeration kept as its
/// string, so that an error can name the field and the value.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: String,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub listener_path: Option<String>,
    #[serde(default)]
    pub listener_metadata: Option<String>,
    #[serde(default)]
    pub syscalls: Vec<Syscall>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Syscall {
    #[serde(default)]
    pub names: Vec<String>,
    pub action: String,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub args: Vec<Arg>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    pub index: u64,
    pub value: u64,
    #[serde(default)]
    pub value_two: Option<u64>,
    pub op: String,
}

impl Profile {
    #[cfg(test)]
    pub fn from_json(json: &str) -> Result<Profile, Error> {
        serde_json::from_str(json).map_err(|e| profile_err("", e.to_string()))
    }

    pub fn from_spec(s: &LinuxSeccomp) -> Result<Profile, Error> {
        let v = serde_json::to_value(s).map_err(|e| profile_err("", e.to_string()))?;
        serde_json::from_value(v).map_err(|e| profile_err("", e.to_string()))
    }
}

/// When the filter must be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadAt {
    /// Without no_new_privs, loading needs CAP_SYS_ADMIN (in the container's
    /// user namespace, which its root holds until its capabilities are set):
    /// load before the capabilities and credentials change, as runc does.
    BeforeCapabilities,
    /// With no_new_privs: as late as possible, right before the exec.
    BeforeExec,
}

impl LoadAt {
    pub fn for_no_new_privileges(nnp: bool) -> LoadAt {
        if nnp {
            LoadAt::BeforeExec
        } else {
            LoadAt::BeforeCapabilities
        }
    }
}

/// A compiled filter, ready to load.
pub struct Filter {
    ctx: ScmpFilterContext,
    /// Length of the BPF program, in instructions.
    pub instructions: usize,
    /// Syscall names the profile lists that this libseccomp does not know.
    pub unknown_syscalls: Vec<String>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("instructions", &self.instructions)
            .field("unknown_syscalls", &self.unknown_syscalls)
            .finish()
    }
}

/// An OCI action (with its `errnoRet`) as libseccomp's.
fn action(name: &str, errno_ret: Option<u32>, field: &str) -> Result<ScmpAction, Error> {
    let ret = |default: u32| -> Result<u16, Error> {
        let e = errno_ret.unwrap_or(default);
        u16::try_from(e).map_err(|_| {
            profile_err(
                field,
                format!("errno {e} of {name} does not fit the 16 bits seccomp returns"),
            )
        })
    };
    Ok(match name {
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => ScmpAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => ScmpAction::KillProcess,
        "SCMP_ACT_TRAP" => ScmpAction::Trap,
        "SCMP_ACT_ERRNO" => ScmpAction::Errno(i32::from(ret(libc::EPERM as u32)?)),
        "SCMP_ACT_TRACE" => ScmpAction::Trace(ret(libc::EPERM as u32)?),
        "SCMP_ACT_ALLOW" => ScmpAction::Allow,
        "SCMP_ACT_LOG" => ScmpAction::Log,
        "SCMP_ACT_NOTIFY" => {
            return Err(profile_err(
                field,
                "SCMP_ACT_NOTIFY needs a seccomp notify listener (linux.seccomp.listenerPath), which idshift does not support",
            ))
        }
        other => return Err(profile_err(field, format!("unknown action {other:?}"))),
    })
}

fn arch(name: &str, field: &str) -> Result<ScmpArch, Error> {
    name.parse::<ScmpArch>()
        .map_err(|_| profile_err(field, format!("unknown architecture {name:?}")))
}

fn condition(a: &Arg, field: &str) -> Result<ScmpArgCompare, Error> {
    if a.index > MAX_ARG_INDEX {
        return Err(profile_err(
            format!("{field}.index"),
            format!(
                "argument index {} is out of range (syscalls have arguments 0 to {MAX_ARG_INDEX})",
                a.index
            ),
        ));
    }
    let two = a.value_two.unwrap_or(0);
    // MASKED_EQ: (arg & value) == valueTwo, as runc hands them to libseccomp.
    let (op, datum) = match a.op.as_str() {
        "SCMP_CMP_NE" => (ScmpCompareOp::NotEqual, a.value),
        "SCMP_CMP_LT" => (ScmpCompareOp::Less, a.value),
        "SCMP_CMP_LE" => (ScmpCompareOp::LessOrEqual, a.value),
        "SCMP_CMP_EQ" => (ScmpCompareOp::Equal, a.value),
        "SCMP_CMP_GE" => (ScmpCompareOp::GreaterEqual, a.value),
        "SCMP_CMP_GT" => (ScmpCompareOp::Greater, a.value),
        "SCMP_CMP_MASKED_EQ" => (ScmpCompareOp::MaskedEqual(a.value), two),
        other => {
            return Err(profile_err(
                format!("{field}.op"),
                format!("unknown operator {other:?}"),
            ))
        }
    };
    // The index is at most 5.
    Ok(ScmpArgCompare::new(a.index as u32, op, datum))
}

impl Filter {
    /// Compiles the spec's profile.
    pub fn from_spec(s: &LinuxSeccomp) -> Result<Filter, Error> {
        Filter::compile(&Profile::from_spec(s)?)
    }

    /// Compiles `p` down to BPF (so that everything but the load itself is
    /// checked here).
    pub fn compile(p: &Profile) -> Result<Filter, Error> {
        if let Some(l) = p.listener_path.as_deref().filter(|l| !l.is_empty()) {
            return Err(profile_err(
                "listenerPath",
                format!("a seccomp notify listener ({l}) is not supported by idshift"),
            ));
        }
        if let Some(m) = p.listener_metadata.as_deref().filter(|m| !m.is_empty()) {
            return Err(profile_err(
                "listenerMetadata",
                format!("{m:?} is for a seccomp notify listener, which idshift does not support"),
            ));
        }
        let default = action(&p.default_action, p.default_errno_ret, "defaultAction")?;
        let mut ctx = ScmpFilterContext::new_filter(default).map_err(lib(format!(
            "creating a filter with default action {}",
            p.default_action
        )))?;
        // Load errors then carry the kernel's errno rather than ECANCELED.
        ctx.set_api_sysrawrc(true)
            .map_err(lib("asking for the kernel's error codes"))?;
        // Never set no_new_privs behind the spec's back.
        ctx.set_ctl_nnp(false)
            .map_err(lib("leaving no_new_privs to the spec"))?;
        for (i, a) in p.architectures.iter().enumerate() {
            let field = format!("architectures[{i}]");
            let arch = arch(a, &field)?;
            ctx.add_arch(arch)
                .map_err(lib(format!("adding architecture {a}")))?;
        }
        for (i, f) in p.flags.iter().enumerate() {
            let field = format!("flags[{i}]");
            match f.as_str() {
                "SECCOMP_FILTER_FLAG_TSYNC" => ctx.set_ctl_tsync(true),
                "SECCOMP_FILTER_FLAG_LOG" => ctx.set_ctl_log(true),
                "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => ctx.set_ctl_ssb(true),
                "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" => {
                    return Err(profile_err(
                        field,
                        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV only applies to a notify listener, which idshift does not support",
                    ))
                }
                other => return Err(profile_err(field, format!("unknown flag {other:?}"))),
            }
            .map_err(lib(format!("setting flag {f}")))?;
        }
        if p.syscalls.len() > 8 {
            // A binary tree of syscalls rather than a list, as runc asks.
            ctx.set_ctl_optimize(2)
                .map_err(lib("asking for a binary-tree filter"))?;
        }
        let mut unknown_syscalls = Vec::new();
        for (i, sc) in p.syscalls.iter().enumerate() {
            let field = format!("syscalls[{i}]");
            let act = action(&sc.action, sc.errno_ret, &format!("{field}.action"))?;
            let mut conds = Vec::with_capacity(sc.args.len());
            let mut per_index = [0usize; MAX_ARG_INDEX as usize + 1];
            for (j, a) in sc.args.iter().enumerate() {
                let c = condition(a, &format!("{field}.args[{j}]"))?;
                per_index[a.index as usize] += 1;
                conds.push(c);
            }
            if act == default {
                // Redundant (and libseccomp refuses it).
                continue;
            }
            for (k, name) in sc.names.iter().enumerate() {
                if name.is_empty() {
                    return Err(profile_err(
                        format!("{field}.names[{k}]"),
                        "empty syscall name",
                    ));
                }
                let nr = match ScmpSyscall::from_name(name) {
                    Ok(nr) => nr,
                    Err(_) => {
                        log::debug!("seccomp: unknown syscall {name:?} skipped");
                        unknown_syscalls.push(name.clone());
                        continue;
                    }
                };
                let what = || format!("adding the rule of {field} for {name}");
                if conds.is_empty() {
                    ctx.add_rule(act, nr).map_err(lib(what()))?;
                } else if per_index.iter().any(|&n| n > 1) {
                    // One index compared twice: each comparison its own rule.
                    for c in &conds {
                        ctx.add_rule_conditional(act, nr, std::slice::from_ref(c))
                            .map_err(lib(what()))?;
                    }
                } else {
                    ctx.add_rule_conditional(act, nr, &conds)
                        .map_err(lib(what()))?;
                }
            }
        }
        let instructions = bpf_len(&ctx)? / 8;
        if instructions > MAX_BPF_INSNS {
            return Err(profile_err(
                "syscalls",
                format!(
                    "the filter compiles to {instructions} BPF instructions, more than the kernel's {MAX_BPF_INSNS}"
                ),
            ));
        }
        Ok(Filter {
            ctx,
            instructions,
            unknown_syscalls,
        })
    }

    /// Loads the filter into this process (and what it execs).
    pub fn load(&self) -> Result<(), Error> {
        self.ctx
            .load()
            .map_err(lib("loading the filter into the kernel"))
    }

    /// libseccomp's human-readable form of the filter.
    #[cfg(test)]
    pub fn pfc(&self) -> Result<String, Error> {
        let mut f = memfd("seccomp-pfc")?;
        self.ctx
            .export_pfc(&mut f)
            .map_err(lib("exporting the filter"))?;
        read_all(f)
    }
}

fn memfd(name: &str) -> Result<std::fs::File, Error> {
    rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)
        .map(std::fs::File::from)
        .map_err(|e| Error::Io {
            what: "memfd_create".into(),
            source: e.into(),
        })
}

#[cfg(test)]
fn read_all(mut f: std::fs::File) -> Result<String, Error> {
    use std::io::{Read, Seek};
    let io = |what: &'static str| {
        move |source: std::io::Error| Error::Io {
            what: what.into(),
            source,
        }
    };
    f.rewind().map_err(io("rewinding the export"))?;
    let mut s = String::new();
    f.read_to_string(&mut s).map_err(io("reading the export"))?;
    Ok(s)
}

/// The BPF program's size in bytes (generating it checks the whole filter).
fn bpf_len(ctx: &ScmpFilterContext) -> Result<usize, Error> {
    let mut f = memfd("seccomp-bpf")?;
    ctx.export_bpf(&mut f)
        .map_err(lib("generating the BPF program"))?;
    let len = f
        .metadata()
        .map_err(|source| Error::Io {
            what: "measuring the BPF program".into(),
            source,
        })?
        .len();
    Ok(usize::try_from(len).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(json: &str) -> Result<Filter, Error> {
        Filter::compile(&Profile::from_json(json)?)
    }

    fn err(json: &str) -> String {
        match compile(json) {
            Ok(f) => panic!("compiled: {f:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// The PFC text of the rule for one syscall (up to the next syscall).
    fn rule_of(pfc: &str, name: &str) -> String {
        let needle = format!("# filter for syscall \"{name}\"");
        let start = pfc
            .find(&needle)
            .unwrap_or_else(|| panic!("no rule for {name} in\n{pfc}"));
        let rest = &pfc[start + needle.len()..];
        let end = rest.find("# filter for syscall").unwrap_or(rest.len());
        rest[..end].to_string()
    }

    #[test]
    fn errno_rule_with_its_errno_and_default_eperm() {
        let f = compile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
                "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
                            {"names":["rmdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .expect("compile");
        let pfc = f.pfc().expect("pfc");
        assert!(
            rule_of(&pfc, "mkdirat").contains("action ERRNO(13)"),
            "{pfc}"
        );
        assert!(rule_of(&pfc, "rmdir").contains("action ERRNO(1)"), "{pfc}");
        assert!(pfc.contains("action ALLOW"), "{pfc}");
        assert!(f.instructions > 0);
        assert!(f.unknown_syscalls.is_empty());
    }

    #[test]
    fn default_errno_ret_and_every_action() {
        let f = compile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,
                "syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"},
                            {"names":["getpid"],"action":"SCMP_ACT_LOG"},
                            {"names":["getppid"],"action":"SCMP_ACT_TRAP"},
                            {"names":["gettid"],"action":"SCMP_ACT_KILL"},
                            {"names":["getuid"],"action":"SCMP_ACT_KILL_PROCESS"},
                            {"names":["getgid"],"action":"SCMP_ACT_TRACE","errnoRet":7},
                            {"names":["geteuid"],"action":"SCMP_ACT_KILL_THREAD"}]}"#,
        )
        .expect("compile");
        let pfc = f.pfc().expect("pfc");
        assert!(pfc.contains("action ERRNO(38);"), "default: {pfc}");
        assert!(rule_of(&pfc, "getpid").contains("action LOG"), "{pfc}");
        assert!(rule_of(&pfc, "getppid").contains("action TRAP"), "{pfc}");
        assert!(rule_of(&pfc, "gettid").contains("action KILL"), "{pfc}");
        assert!(
            rule_of(&pfc, "getuid").contains("action KILL_PROCESS"),
            "{pfc}"
        );
        assert!(rule_of(&pfc, "getgid").contains("action TRACE(7)"), "{pfc}");
        assert!(rule_of(&pfc, "write").contains("action ALLOW"), "{pfc}");
    }

    #[test]
    fn rules_equal_to_the_default_and_unknown_syscalls_are_skipped() {
        let f = compile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO",
                "syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ERRNO"},
                            {"names":["no_such_syscall_42","getppid"],"action":"SCMP_ACT_ALLOW"}]}"#,
        )
        .expect("compile");
        let pfc = f.pfc().expect("pfc");
        assert!(!pfc.contains("\"getpid\""), "{pfc}");
        assert!(rule_of(&pfc, "getppid").contains("action ALLOW"), "{pfc}");
        assert_eq!(f.unknown_syscalls, ["no_such_syscall_42"]);
    }

    #[test]
    fn args_on_distinct_indexes_are_anded() {
        let f = compile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
                "syscalls":[{"names":["socket"],"action":"SCMP_ACT_ERRNO","errnoRet":97,
                             "args":[{"index":0,"value":10,"op":"SCMP_CMP_EQ"},
                                     {"index":1,"value":2,"op":"SCMP_CMP_EQ"}]}]}"#,
        )
        .expect("compile");
        let pfc = f.pfc().expect("pfc");
        let rule = rule_of(&pfc, "socket");
        // One nested test: a0 == 10 then, inside it, a1 == 2.
        assert_eq!(rule.matches("action ERRNO(97)").count(), 1, "{pfc}");
        assert!(rule.contains("$a0.lo32 == 10"), "{pfc}");
        assert!(rule.contains("$a1.lo32 == 2"), "{pfc}");
    }

    #[test]
    fn args_on_one_index_are_ored_as_separate_rules() {
        let f = compile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
                "syscalls":[{"names":["personality"],"action":"SCMP_ACT_ERRNO",
                             "args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"},
                                     {"index":0,"value":131080,"op":"SCMP_CMP_EQ"}]}]}"#,
        )
        .expect("compile");
        let pfc = f.pfc().expect("pfc");
        let rule = rule_of(&pfc, "personality");
        assert_eq!(rule.matches("action ERRNO(1)").count(), 2, "{pfc}");
        assert!(rule.contains("$a0.lo32 == 8"), "{pfc}");
        assert!(rule.contains("$a0.lo32 == 131080"), "{pfc}");
    }

    #[test]
    fn masked_eq_masks_with_value_and_compares_with_value_two() {
        let f = compile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
                "syscalls":[{"names":["clone"],"action":"SCMP_ACT_ERRNO",
                             "args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
                            {"names":["umask"],"action":"SCMP_ACT_ERRNO",
                             "args":[{"index":0,"value":255,"valueTwo":16,"op":"SCMP_CMP_MASKED_EQ"}]},
                            {"names":["kill"],"action":"SCMP_ACT_ERRNO",
                             "args":[{"index":1,"value":9,"op":"SCMP_CMP_NE"}]}]}"#,
        )
        .expect("compile");
        let pfc = f.pfc().expect("pfc");
        let rule = rule_of(&pfc, "clone");
        // libseccomp prints a masked test as `$a0.lo32 & mask == datum`.
        assert!(rule.contains("$a0.lo32 & 0x7e020000 == 0"), "{pfc}");
        assert!(
            rule_of(&pfc, "umask").contains("$a0.lo32 & 0x000000ff == 16"),
            "{pfc}"
        );
        // NE is emitted as the inverse test: the rule fires unless a1 == 9.
        let kill = rule_of(&pfc, "kill");
        assert!(
            kill.contains("$a1.lo32 == 9") && kill.contains("else"),
            "{pfc}"
        );
    }

    #[test]
    fn flags_are_accepted() {
        compile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
                "flags":["SECCOMP_FILTER_FLAG_TSYNC","SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_LOG"}]}"#,
        )
        .expect("compile");
    }

    #[test]
    fn errors_name_the_field() {
        let e = err(r#"{"defaultAction":"SCMP_ACT_NOPE"}"#);
        assert!(
            e.contains("linux.seccomp.defaultAction") && e.contains("SCMP_ACT_NOPE"),
            "{e}"
        );
        let e = err(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["a"],"action":"SCMP_ACT_ALLOW"},{"names":["mkdir"],"action":"SCMP_ACT_BOGUS"}]}"#,
        );
        assert!(
            e.contains("linux.seccomp.syscalls[1].action") && e.contains("SCMP_ACT_BOGUS"),
            "{e}"
        );
        let e = err(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_Z80"]}"#,
        );
        assert!(
            e.contains("linux.seccomp.architectures[1]") && e.contains("SCMP_ARCH_Z80"),
            "{e}"
        );
        let e = err(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["socket"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"SCMP_CMP_ALMOST"}]}]}"#,
        );
        assert!(
            e.contains("linux.seccomp.syscalls[0].args[0].op") && e.contains("SCMP_CMP_ALMOST"),
            "{e}"
        );
        let e = err(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["socket"],"action":"SCMP_ACT_ERRNO","args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        assert!(
            e.contains("linux.seccomp.syscalls[0].args[0].index") && e.contains('6'),
            "{e}"
        );
        let e = err(r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_FAST"]}"#);
        assert!(
            e.contains("linux.seccomp.flags[0]") && e.contains("SECCOMP_FILTER_FLAG_FAST"),
            "{e}"
        );
        let e = err(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":70000}]}"#,
        );
        assert!(
            e.contains("linux.seccomp.syscalls[0].action") && e.contains("70000"),
            "{e}"
        );
        let e = err(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":[""],"action":"SCMP_ACT_ERRNO"}]}"#,
        );
        assert!(e.contains("linux.seccomp.syscalls[0].names[0]"), "{e}");
    }

    #[test]
    fn notify_is_refused_clearly() {
        for json in [
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
            r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#,
        ] {
            let e = err(json);
            assert!(
                e.contains("SCMP_ACT_NOTIFY") && e.contains("not support"),
                "{e}"
            );
        }
        let e = err(r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/agent.sock"}"#);
        assert!(e.contains("linux.seccomp.listenerPath"), "{e}");
        let e = err(r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerMetadata":"x"}"#);
        assert!(e.contains("linux.seccomp.listenerMetadata"), "{e}");
        let e = err(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}"#,
        );
        assert!(e.contains("linux.seccomp.flags[0]"), "{e}");
    }

    #[test]
    fn from_the_oci_spec_types() {
        let s: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"architectures":["SCMP_ARCH_X86_64"],
                "flags":["SECCOMP_FILTER_FLAG_LOG"],
                "syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ALLOW"},
                            {"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
        )
        .expect("oci-spec parses it");
        let f = Filter::from_spec(&s).expect("compile");
        let pfc = f.pfc().expect("pfc");
        assert!(rule_of(&pfc, "socket").contains("$a0.lo32 == 1"), "{pfc}");
    }

    #[test]
    fn load_stage_follows_no_new_privileges() {
        assert_eq!(LoadAt::for_no_new_privileges(true), LoadAt::BeforeExec);
        assert_eq!(
            LoadAt::for_no_new_privileges(false),
            LoadAt::BeforeCapabilities
        );
    }
}
