//! A small classic-BPF assembler for seccomp filters: loads of
//! `seccomp_data` words, `and`, compare-and-jump with forward labels, `ret`.
//! (Plus, for tests, an interpreter of the same subset.)
//!
//! Conditional jumps reach at most 255 instructions; [`Asm::jump`] (32-bit
//! offset) goes anywhere forward. Code built from these stays correct by
//! construction: [`Asm::finish`] refuses a backward or out-of-range jump and
//! an unbound label.

/// `BPF_LD | BPF_W | BPF_ABS`.
const LD_W_ABS: u16 = 0x20;
/// `BPF_ALU | BPF_AND | BPF_K`.
const ALU_AND_K: u16 = 0x54;
/// `BPF_JMP | BPF_JA`.
const JMP_JA: u16 = 0x05;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
const JMP_JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JGE | BPF_K`.
const JMP_JGE_K: u16 = 0x35;
/// `BPF_RET | BPF_K`.
const RET_K: u16 = 0x06;

/// `seccomp_data` offsets.
pub(crate) const OFFSET_NR: u32 = 0;
pub(crate) const OFFSET_ARCH: u32 = 4;

/// Offset of the low 32 bits of syscall argument `index`.
pub(crate) const fn arg_low(index: u8) -> u32 {
    let base = 16 + 8 * index as u32;
    if cfg!(target_endian = "little") {
        base
    } else {
        base + 4
    }
}

/// A place in the program, bound later with [`Asm::bind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Label(usize);

/// Where a conditional branch goes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    /// The next instruction.
    Next,
    /// A label (at most 255 instructions ahead).
    To(Label),
}

#[derive(Debug)]
enum Item {
    Plain(u16, u32),
    Cond(u16, u32, Target, Target),
    Jump(Label),
}

/// Errors that only a bug in the filter generator can cause.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// A jump target is behind the jump or too far for its encoding.
    #[error("seccomp filter: jump from instruction {from} to label at {to} cannot be encoded")]
    Jump {
        /// The jump.
        from: usize,
        /// Where the label is.
        to: usize,
    },
    /// A label was never bound.
    #[error("seccomp filter: a label was never bound")]
    Unbound,
    /// More instructions than the kernel takes (BPF_MAXINSNS).
    #[error("seccomp filter has {0} instructions; the kernel takes at most 4096")]
    TooLong(usize),
}

/// The program being built.
#[derive(Debug, Default)]
pub(crate) struct Asm {
    items: Vec<Item>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    pub(crate) fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Bind `label` to the next instruction.
    pub(crate) fn bind(&mut self, label: Label) {
        self.labels[label.0] = Some(self.items.len());
    }

    /// `A = seccomp_data[offset]` (32 bits).
    pub(crate) fn load(&mut self, offset: u32) {
        self.items.push(Item::Plain(LD_W_ABS, offset));
    }

    /// `A &= mask`.
    pub(crate) fn and(&mut self, mask: u32) {
        self.items.push(Item::Plain(ALU_AND_K, mask));
    }

    /// `return value`.
    pub(crate) fn ret(&mut self, value: u32) {
        self.items.push(Item::Plain(RET_K, value));
    }

    /// `if A == k goto t else goto f`.
    pub(crate) fn jeq(&mut self, k: u32, t: Target, f: Target) {
        self.items.push(Item::Cond(JMP_JEQ_K, k, t, f));
    }

    /// `if A >= k goto t else goto f`.
    pub(crate) fn jge(&mut self, k: u32, t: Target, f: Target) {
        self.items.push(Item::Cond(JMP_JGE_K, k, t, f));
    }

    /// `goto label` (any distance forward).
    pub(crate) fn jump(&mut self, label: Label) {
        self.items.push(Item::Jump(label));
    }

    /// Resolve labels into the kernel's instruction format.
    pub(crate) fn finish(self) -> Result<Vec<libc::sock_filter>, BpfError> {
        if self.items.len() > 4096 {
            return Err(BpfError::TooLong(self.items.len()));
        }
        let at = |label: Label| self.labels[label.0].ok_or(BpfError::Unbound);
        let offset =
            |from: usize, to: usize| to.checked_sub(from + 1).ok_or(BpfError::Jump { from, to });
        let short = |from: usize, target: Target| -> Result<u8, BpfError> {
            match target {
                Target::Next => Ok(0),
                Target::To(label) => {
                    let to = at(label)?;
                    u8::try_from(offset(from, to)?).map_err(|_| BpfError::Jump { from, to })
                }
            }
        };
        self.items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let (code, k, jt, jf) = match *item {
                    Item::Plain(code, k) => (code, k, 0, 0),
                    Item::Cond(code, k, t, f) => (code, k, short(i, t)?, short(i, f)?),
                    Item::Jump(label) => {
                        let to = at(label)?;
                        let k = u32::try_from(offset(i, to)?)
                            .map_err(|_| BpfError::Jump { from: i, to })?;
                        (JMP_JA, k, 0, 0)
                    }
                };
                Ok(libc::sock_filter { code, jt, jf, k })
            })
            .collect()
    }
}

/// Run `program` on a `seccomp_data` (nr, arch, args) and return its verdict.
/// Covers exactly the instructions [`Asm`] emits.
#[cfg(test)]
pub(crate) fn run(program: &[libc::sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
    }
    let mut a: u32 = 0;
    let mut pc = 0usize;
    loop {
        let insn = program[pc];
        pc += 1;
        match insn.code {
            LD_W_ABS => {
                let o = insn.k as usize;
                a = u32::from_ne_bytes(data[o..o + 4].try_into().unwrap());
            }
            ALU_AND_K => a &= insn.k,
            RET_K => return insn.k,
            JMP_JA => pc += insn.k as usize,
            JMP_JEQ_K | JMP_JGE_K => {
                let taken = if insn.code == JMP_JEQ_K {
                    a == insn.k
                } else {
                    a >= insn.k
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
            other => panic!("unexpected BPF opcode {other:#x} at {}", pc - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_resolve_to_forward_offsets() {
        let mut asm = Asm::default();
        let (yes, far) = (asm.label(), asm.label());
        asm.load(OFFSET_NR);
        asm.jeq(7, Target::To(yes), Target::Next);
        asm.jge(100, Target::Next, Target::To(yes));
        asm.jump(far);
        asm.ret(1);
        asm.bind(yes);
        asm.ret(2);
        for _ in 0..300 {
            asm.ret(3);
        }
        asm.bind(far);
        asm.ret(4);
        let p = asm.finish().unwrap();
        assert_eq!((p[1].jt, p[1].jf), (3, 0));
        assert_eq!((p[2].jt, p[2].jf), (0, 2));
        assert_eq!(p[3].k, 302);
        assert_eq!(run(&p, 7, 0, [0; 6]), 2);
        assert_eq!(run(&p, 8, 0, [0; 6]), 2);
        assert_eq!(run(&p, 100, 0, [0; 6]), 4);
    }

    #[test]
    fn unencodable_jumps_are_errors() {
        let mut asm = Asm::default();
        let l = asm.label();
        asm.load(OFFSET_NR);
        asm.jeq(1, Target::To(l), Target::Next);
        for _ in 0..300 {
            asm.ret(0);
        }
        asm.bind(l);
        asm.ret(1);
        assert!(matches!(asm.finish(), Err(BpfError::Jump { .. })));

        let mut asm = Asm::default();
        let l = asm.label();
        asm.bind(l);
        asm.ret(0);
        asm.jump(l);
        assert!(matches!(asm.finish(), Err(BpfError::Jump { .. })));

        let mut asm = Asm::default();
        let l = asm.label();
        asm.jump(l);
        assert!(matches!(asm.finish(), Err(BpfError::Unbound)));
    }

    #[test]
    fn arguments_load_their_low_word() {
        let mut asm = Asm::default();
        let no = asm.label();
        asm.load(arg_low(2));
        asm.and(0xffff);
        asm.jeq(0x1234, Target::Next, Target::To(no));
        asm.ret(1);
        asm.bind(no);
        asm.ret(0);
        let p = asm.finish().unwrap();
        assert_eq!(run(&p, 0, 0, [0, 0, 0x1_0000_1234, 0, 0, 0]), 1);
        assert_eq!(run(&p, 0, 0, [0, 0x1234, 0xff_1235, 0, 0, 0]), 0);
    }
}
