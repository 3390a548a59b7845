//! Device rules (`linux.resources.devices`), both cgroup versions.
//!
//! The rules are first reduced as cgroup v1 applies them in order (an `a`
//! rule sets the default and forgets the exceptions; a rule against the
//! default adds an exception; a rule agreeing with it removes the same
//! exception's access), so one spec means the same on v1 and v2.
//!
//! v2 has no devices.allow/deny files: the reduced rules become an eBPF
//! program of type BPF_PROG_TYPE_CGROUP_DEVICE attached to the container's
//! cgroup (runc, crun and youki do the same), which matches the exceptions
//! and returns the opposite of the default.
//!
//! v1 gets the fewest writes that take the cgroup from what its devices.list
//! says to the reduced rules (runc's emulator does the same): written one by
//! one as a spec says them, `deny a` first, a cgroup refuses every device
//! for a moment, and a process in it opening /dev/ptmx or /dev/null then
//! fails with EPERM. An Update with the same rules writes nothing.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::{CgroupError, DeviceRule, Result};
use crate::sys;

/// `bpf_cgroup_dev_ctx.access_type`'s low half: BPF_DEVCG_DEV_BLOCK/CHAR.
const DEV_BLOCK: u32 = 1;
const DEV_CHAR: u32 = 2;
/// Its high half: BPF_DEVCG_ACC_MKNOD/READ/WRITE.
const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;
const BPF_F_ALLOW_MULTI: u32 = 2;
const BPF_F_REPLACE: u32 = 4;

/// One exception to the default: a device type, numbers (`None`: any) and
/// access bits.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Exception {
    kind: u32,
    major: Option<u32>,
    minor: Option<u32>,
    access: u32,
}

/// The rules reduced: whether unmatched accesses are allowed, and the
/// exceptions (each giving the opposite answer).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Reduced {
    default_allow: bool,
    exceptions: Vec<Exception>,
}

fn number(what: &str, n: Option<i64>) -> Result<Option<u32>> {
    match n {
        None | Some(-1) => Ok(None),
        Some(n) => u32::try_from(n).map(Some).map_err(|_| {
            CgroupError::Invalid(format!(
                "device rule {what} number {n} is not a device number"
            ))
        }),
    }
}

fn access_bits(access: &str) -> Result<u32> {
    let mut bits = 0;
    for c in access.chars() {
        bits |= match c {
            'm' => ACC_MKNOD,
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            _ => {
                return Err(CgroupError::Invalid(format!(
                    "device rule access {access:?} is not made of r, w and m"
                )))
            }
        };
    }
    if bits == 0 {
        return Err(CgroupError::Invalid(
            "device rule access is empty (r, w and/or m)".into(),
        ));
    }
    Ok(bits)
}

/// Reduces the rules as cgroup v1's devices controller applies them, from a
/// container's starting point (everything allowed, as a new v1 cgroup under
/// an unrestricted parent; containerd's specs start with `deny a`).
fn reduce(rules: &[DeviceRule]) -> Result<Reduced> {
    let mut r = Reduced {
        default_allow: true,
        exceptions: Vec::new(),
    };
    for rule in rules {
        let kind = match rule.kind {
            'a' => None,
            'c' => Some(DEV_CHAR),
            'b' => Some(DEV_BLOCK),
            k => {
                return Err(CgroupError::Invalid(format!(
                    "device rule type {k:?} is not a, c or b"
                )))
            }
        };
        let access = access_bits(&rule.access)?;
        let major = number("major", rule.major)?;
        let minor = number("minor", rule.minor)?;
        let Some(kind) = kind else {
            // v1's "a": every device, whatever the numbers and access say.
            r.default_allow = rule.allow;
            r.exceptions.clear();
            continue;
        };
        let ex = Exception {
            kind,
            major,
            minor,
            access,
        };
        let same = |e: &Exception| e.kind == ex.kind && e.major == ex.major && e.minor == ex.minor;
        if rule.allow != r.default_allow {
            match r.exceptions.iter_mut().find(|e| same(e)) {
                Some(e) => e.access |= access,
                None => r.exceptions.push(ex),
            }
        } else {
            for e in r.exceptions.iter_mut().filter(|e| same(e)) {
                e.access &= !access;
            }
            r.exceptions.retain(|e| e.access != 0);
        }
    }
    Ok(r)
}

/// One write to a v1 devices cgroup: the line, to `devices.allow` or
/// `devices.deny`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct V1Write {
    pub allow: bool,
    pub line: String,
}

impl V1Write {
    pub(super) fn file(&self) -> &'static str {
        if self.allow {
            "devices.allow"
        } else {
            "devices.deny"
        }
    }

    /// Whether this write refuses every device until the next ones.
    pub(super) fn denies_all(&self) -> bool {
        !self.allow && self.line == "a"
    }
}

fn v1_line(e: &Exception) -> String {
    let kind = if e.kind == DEV_BLOCK { 'b' } else { 'c' };
    let num = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
    let mut access = String::new();
    for (bit, c) in [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')] {
        if e.access & bit != 0 {
            access.push(c);
        }
    }
    format!("{kind} {}:{} {access}", num(e.major), num(e.minor))
}

/// What a v1 devices.list says: `None` for a cgroup allowing every device
/// (the kernel then lists only `a *:* rwm`, not the devices it denies), else
/// the devices it allows.
fn parse_v1_list(list: &str) -> Result<Option<Vec<Exception>>> {
    let bad =
        |line: &str| CgroupError::Invalid(format!("devices.list line {line:?} is not understood"));
    let mut allowed = Vec::new();
    for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut parts = line.split_whitespace();
        let (Some(kind), Some(numbers), Some(access), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad(line));
        };
        let kind = match kind {
            "a" => return Ok(None),
            "c" => DEV_CHAR,
            "b" => DEV_BLOCK,
            _ => return Err(bad(line)),
        };
        let (major, minor) = numbers.split_once(':').ok_or_else(|| bad(line))?;
        let num = |n: &str| -> Result<Option<u32>> {
            if n == "*" {
                Ok(None)
            } else {
                n.parse().map(Some).map_err(|_| bad(line))
            }
        };
        allowed.push(Exception {
            kind,
            major: num(major)?,
            minor: num(minor)?,
            access: access_bits(access).map_err(|_| bad(line))?,
        });
    }
    Ok(Some(allowed))
}

/// The writes that take a v1 devices cgroup listing `list` to `rules`. A
/// cgroup allowing only some devices that is to stay so gets only what
/// differs, allowed before denied, so that no access both allow is refused
/// for a moment. Otherwise the default changes, or the cgroup allows every
/// device and its denied ones are unknown: an `a` rule comes first (`deny a`
/// refuses every device until the rules after it), then the exceptions.
pub(super) fn v1_writes(list: &str, rules: &[DeviceRule]) -> Result<Vec<V1Write>> {
    let target = reduce(rules)?;
    let write = |allow: bool, e: &Exception| V1Write {
        allow,
        line: v1_line(e),
    };
    let same =
        |a: &Exception, b: &Exception| a.kind == b.kind && a.major == b.major && a.minor == b.minor;
    match parse_v1_list(list)? {
        Some(current) if !target.default_allow => {
            // The access each exception of `from` has beyond the same one
            // of `to`.
            let beyond = |from: &[Exception], to: &[Exception]| -> Vec<Exception> {
                from.iter()
                    .filter_map(|e| {
                        let other = to.iter().find(|o| same(o, e)).map_or(0, |o| o.access);
                        (e.access & !other != 0).then(|| Exception {
                            access: e.access & !other,
                            ..e.clone()
                        })
                    })
                    .collect()
            };
            let mut writes: Vec<V1Write> = beyond(&target.exceptions, &current)
                .iter()
                .map(|e| write(true, e))
                .collect();
            writes.extend(
                beyond(&current, &target.exceptions)
                    .iter()
                    .map(|e| write(false, e)),
            );
            Ok(writes)
        }
        _ => {
            let mut writes = vec![V1Write {
                allow: target.default_allow,
                line: "a".into(),
            }];
            writes.extend(
                target
                    .exceptions
                    .iter()
                    .map(|e| write(!target.default_allow, e)),
            );
            Ok(writes)
        }
    }
}

// eBPF instruction encoding (linux/bpf_common.h, linux/bpf.h).
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
/// BPF_LDX | BPF_MEM | BPF_W.
const LDX_W: u8 = 0x61;
/// BPF_ALU | BPF_AND | BPF_K (32-bit).
const AND32_K: u8 = 0x54;
/// BPF_ALU | BPF_RSH | BPF_K.
const RSH32_K: u8 = 0x74;
/// BPF_ALU | BPF_MOV | BPF_X and BPF_K.
const MOV32_X: u8 = 0xbc;
const MOV32_K: u8 = 0xb4;
/// BPF_JMP32 | BPF_JEQ | BPF_K.
const JEQ32_K: u8 = 0x16;
/// BPF_JMP32 | BPF_JNE | BPF_K and BPF_X.
const JNE32_K: u8 = 0x56;
const JNE32_X: u8 = 0x5e;
/// BPF_JMP | BPF_EXIT.
const EXIT: u8 = 0x95;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst & 0xf) << 8)
        | (u64::from(src & 0xf) << 12)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

/// The program for the reduced rules. Registers: r2 the device type, r3 the
/// access asked, r4 the major, r5 the minor.
fn program(r: &Reduced) -> Result<Vec<u64>> {
    let mut p = vec![
        insn(LDX_W, R2, R1, 0, 0),
        insn(AND32_K, R2, 0, 0, 0xffff),
        insn(LDX_W, R3, R1, 0, 0),
        insn(RSH32_K, R3, 0, 0, 16),
        insn(LDX_W, R4, R1, 4, 0),
        insn(LDX_W, R5, R1, 8, 0),
    ];
    let verdict = i32::from(!r.default_allow);
    for e in &r.exceptions {
        let mut block = Vec::new();
        // Each check jumps past the block's end when it does not match; the
        // offsets are filled in once the block's length is known.
        let mut checks = Vec::new();
        checks.push(block.len());
        block.push((JNE32_K, R2, 0u8, e.kind as i32));
        if e.access & ACC_ALL != ACC_ALL {
            block.push((MOV32_X, R1, R3, 0));
            block.push((AND32_K, R1, 0, e.access as i32));
            checks.push(block.len());
            if r.default_allow {
                // A denied exception matches any access it names (as v1's
                // partial match in a default-allow cgroup).
                block.push((JEQ32_K, R1, 0, 0));
            } else {
                // An allowed one only an access entirely within it.
                block.push((JNE32_X, R1, R3, 0));
            }
        }
        if let Some(major) = e.major {
            checks.push(block.len());
            block.push((JNE32_K, R4, 0, major as i32));
        }
        if let Some(minor) = e.minor {
            checks.push(block.len());
            block.push((JNE32_K, R5, 0, minor as i32));
        }
        block.push((MOV32_K, R0, 0, verdict));
        block.push((EXIT, 0, 0, 0));
        let len = block.len();
        for (i, (code, dst, src, imm)) in block.into_iter().enumerate() {
            let off = if checks.contains(&i) {
                i16::try_from(len - i - 1).map_err(|_| {
                    CgroupError::Invalid("device rule program block too long".into())
                })?
            } else {
                0
            };
            p.push(insn(code, dst, src, off, imm));
        }
    }
    p.push(insn(MOV32_K, R0, 0, 0, i32::from(r.default_allow)));
    p.push(insn(EXIT, 0, 0, 0, 0));
    Ok(p)
}

/// Builds the program for `rules` and makes it the cgroup's only device
/// program: it replaces the one attached before (BPF_F_REPLACE, atomic), or
/// is attached beside those before, which are then detached.
pub(super) fn apply(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    let insns = program(&reduce(rules)?)?;
    let bpf_err = |op: &'static str| {
        move |e: std::io::Error| CgroupError::Io {
            op,
            path: dir.to_path_buf(),
            source: e,
        }
    };
    let prog = sys::bpf_load_device_program(&insns, "idshift_devices")
        .map_err(bpf_err("loading the device rules' eBPF program for"))?;
    let cg = File::open(dir).map_err(bpf_err("opening cgroup"))?;
    let old = sys::bpf_query_device_programs(cg.as_raw_fd())
        .map_err(bpf_err("listing the device programs of cgroup"))?;
    let mut old_fds = Vec::new();
    for id in old {
        match sys::bpf_prog_fd_by_id(id) {
            Ok(fd) => old_fds.push(fd),
            // Detached meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(bpf_err("opening a device program of cgroup")(e)),
        }
    }
    if let [only] = old_fds.as_slice() {
        sys::bpf_attach(
            cg.as_raw_fd(),
            prog.as_raw_fd(),
            BPF_F_ALLOW_MULTI | BPF_F_REPLACE,
            Some(only.as_raw_fd()),
        )
        .map_err(bpf_err("replacing the device program of cgroup"))?;
        return Ok(());
    }
    sys::bpf_attach(cg.as_raw_fd(), prog.as_raw_fd(), BPF_F_ALLOW_MULTI, None)
        .map_err(bpf_err("attaching the device program to cgroup"))?;
    for fd in old_fds {
        match sys::bpf_detach(cg.as_raw_fd(), fd.as_raw_fd()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(bpf_err("detaching an old device program of cgroup")(e)),
        }
    }
    Ok(())
}

/// The ids of the device programs attached to the cgroup at `dir`.
#[cfg(test)]
pub(super) fn attached(dir: &Path) -> std::io::Result<Vec<u32>> {
    let cg = File::open(dir)?;
    sys::bpf_query_device_programs(cg.as_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        allow: bool,
        kind: char,
        major: Option<i64>,
        minor: Option<i64>,
        a: &str,
    ) -> DeviceRule {
        DeviceRule {
            allow,
            kind,
            major,
            minor,
            access: a.into(),
        }
    }

    /// Runs the program on one access as the kernel would (an interpreter
    /// of the few instructions `program` emits).
    fn run(p: &[u64], kind: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | kind, major, minor];
        let mut reg = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let code = (i & 0xff) as u8;
            let dst = ((i >> 8) & 0xf) as usize;
            let src = ((i >> 12) & 0xf) as usize;
            let off = ((i >> 16) & 0xffff) as u16 as i16;
            let imm = (i >> 32) as u32;
            pc += 1;
            match code {
                LDX_W => {
                    assert_eq!(src, R1 as usize);
                    reg[dst] = u64::from(ctx[off as usize / 4]);
                }
                AND32_K => reg[dst] = u64::from(reg[dst] as u32 & imm),
                RSH32_K => reg[dst] = u64::from(reg[dst] as u32 >> imm),
                MOV32_X => reg[dst] = u64::from(reg[src] as u32),
                MOV32_K => reg[dst] = u64::from(imm),
                JNE32_K => {
                    if reg[dst] as u32 != imm {
                        pc += off as usize;
                    }
                }
                JEQ32_K => {
                    if reg[dst] as u32 == imm {
                        pc += off as usize;
                    }
                }
                JNE32_X => {
                    if reg[dst] as u32 != reg[src] as u32 {
                        pc += off as usize;
                    }
                }
                EXIT => return reg[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn rules_reduce_as_v1_applies_them() {
        // containerd's: deny everything, then allow some.
        let r = reduce(&[
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'c', Some(1), Some(3), "rwm"),
            rule(true, 'c', Some(136), None, "rw"),
            rule(true, 'c', Some(136), None, "m"),
            rule(false, 'c', Some(1), Some(3), "w"),
        ])
        .expect("reduce");
        assert!(!r.default_allow);
        assert_eq!(
            r.exceptions,
            vec![
                Exception {
                    kind: DEV_CHAR,
                    major: Some(1),
                    minor: Some(3),
                    access: ACC_READ | ACC_MKNOD
                },
                Exception {
                    kind: DEV_CHAR,
                    major: Some(136),
                    minor: None,
                    access: ACC_ALL
                },
            ]
        );
        // A later "a" forgets what came before.
        let r = reduce(&[
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'c', Some(1), Some(3), "rwm"),
            rule(true, 'a', None, None, "rwm"),
            rule(false, 'b', Some(8), Some(-1), "rwm"),
        ])
        .expect("reduce");
        assert!(r.default_allow);
        assert_eq!(r.exceptions.len(), 1);
        assert_eq!(r.exceptions[0].minor, None);
        // Nothing: everything allowed, as a v1 cgroup without rules.
        assert!(reduce(&[]).expect("empty").default_allow);
        for bad in [
            rule(true, 'x', None, None, "r"),
            rule(true, 'c', Some(1), Some(3), "rwx"),
            rule(true, 'c', Some(1), Some(3), ""),
            rule(true, 'c', Some(-5), Some(3), "r"),
            rule(true, 'c', Some(1 << 40), Some(3), "r"),
        ] {
            assert!(
                matches!(
                    reduce(std::slice::from_ref(&bad)),
                    Err(CgroupError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn program_answers_as_the_rules_say() {
        let rules = [
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'c', Some(1), Some(3), "rwm"),
            rule(true, 'c', Some(1), Some(5), "r"),
            rule(true, 'c', Some(136), None, "rwm"),
            rule(true, 'b', None, Some(0), "m"),
        ];
        let p = program(&reduce(&rules).expect("reduce")).expect("program");
        let (r, w, m) = (ACC_READ, ACC_WRITE, ACC_MKNOD);
        for (kind, access, major, minor, want) in [
            (DEV_CHAR, r | w, 1, 3, 1),
            (DEV_CHAR, m, 1, 3, 1),
            (DEV_BLOCK, r, 1, 3, 0),
            (DEV_CHAR, r, 1, 5, 1),
            (DEV_CHAR, r | w, 1, 5, 0),
            (DEV_CHAR, w, 1, 5, 0),
            (DEV_CHAR, r, 1, 7, 0),
            (DEV_CHAR, r | w, 136, 0, 1),
            (DEV_CHAR, r | w, 136, 4095, 1),
            (DEV_CHAR, r, 137, 0, 0),
            (DEV_BLOCK, m, 8, 0, 1),
            (DEV_BLOCK, r, 8, 0, 0),
            (DEV_BLOCK, m, 8, 1, 0),
        ] {
            assert_eq!(
                run(&p, kind, access, major, minor),
                want,
                "type {kind} access {access} {major}:{minor}"
            );
        }
        // Default allow with one denied block device.
        let p = program(
            &reduce(&[
                rule(true, 'a', None, None, "rwm"),
                rule(false, 'b', Some(8), Some(0), "w"),
            ])
            .expect("reduce"),
        )
        .expect("program");
        assert_eq!(run(&p, DEV_BLOCK, ACC_WRITE, 8, 0), 0);
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ | ACC_WRITE, 8, 0), 0);
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 8, 0), 1);
        assert_eq!(run(&p, DEV_CHAR, ACC_WRITE, 8, 0), 1);
    }

    fn lines(writes: &[V1Write]) -> Vec<String> {
        writes
            .iter()
            .map(|w| format!("{} {}", w.file(), w.line))
            .collect()
    }

    #[test]
    fn v1_writes_are_the_fewest() {
        let spec = [
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'c', Some(1), Some(3), "rwm"),
            rule(true, 'c', None, None, "m"),
            rule(true, 'c', Some(136), None, "rw"),
        ];
        // A new cgroup allows every device: `deny a` first, then the rest.
        let w = v1_writes("a *:* rwm\n", &spec).expect("writes");
        assert!(w[0].denies_all());
        assert_eq!(
            lines(&w),
            [
                "devices.deny a",
                "devices.allow c 1:3 rwm",
                "devices.allow c *:* m",
                "devices.allow c 136:* rw",
            ]
        );
        // What the kernel lists then: the same rules again write nothing.
        let applied = "c 1:3 rwm\nc *:* m\nc 136:* rw\n";
        assert_eq!(v1_writes(applied, &spec).expect("writes"), []);
        // Other rules: what is added first, then what is taken away, each
        // by the access bits that differ; never `a`.
        let other = [
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'c', Some(1), Some(3), "r"),
            rule(true, 'c', Some(136), None, "rwm"),
            rule(true, 'b', Some(8), Some(0), "rw"),
        ];
        assert_eq!(
            lines(&v1_writes(applied, &other).expect("writes")),
            [
                "devices.allow c 136:* m",
                "devices.allow b 8:0 rw",
                "devices.deny c 1:3 wm",
                "devices.deny c *:* m",
            ]
        );
        // Everything denied (an empty list) to some devices allowed.
        assert_eq!(
            lines(&v1_writes("", &other[..2]).expect("writes")),
            ["devices.allow c 1:3 r"]
        );
        // A default that allows: its denied devices are not listed, so
        // `allow a` first, then the devices denied.
        let deny_one = [rule(false, 'b', Some(8), Some(0), "w")];
        for list in ["a *:* rwm", applied] {
            let w = v1_writes(list, &deny_one).expect("writes");
            assert!(!w[0].denies_all());
            assert_eq!(lines(&w), ["devices.allow a", "devices.deny b 8:0 w"]);
        }
    }

    #[test]
    fn a_v1_list_not_understood_is_named() {
        for list in [
            "x 1:3 rwm",
            "c 1:3",
            "c 13 rwm",
            "c 1:3 rwx",
            "c 1:y r",
            "c 1:3 r extra",
        ] {
            let e = v1_writes(list, &[rule(false, 'a', None, None, "rwm")])
                .expect_err(list)
                .to_string();
            assert!(e.contains(&format!("{list:?}")), "{e}");
        }
    }
}
