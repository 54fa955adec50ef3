//! The device rules of [`crate::cgroup::ALLOWED_DEVICES`] as a
//! BPF_PROG_TYPE_CGROUP_DEVICE program, for cgroup v2 (which has no
//! `devices` controller files; runc does the same with its
//! `devicefilter`). The program sees `struct bpf_cgroup_dev_ctx`
//! { access_type = access << 16 | type, major, minor } and returns 1 to
//! allow.

use crate::cgroup::ALLOWED_DEVICES;

const LDX_MEM_W: u8 = 0x61;
const ALU64_MOV_K: u8 = 0xb7;
const ALU64_MOV_X: u8 = 0xbf;
const ALU_AND_K: u8 = 0x54;
const ALU_RSH_K: u8 = 0x74;
const JMP_JNE_K: u8 = 0x55;
const JMP_EXIT: u8 = 0x95;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    // struct bpf_insn { u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm; }
    // as little-endian bytes (the bitfield order is the kernel's on LE).
    let regs = (src << 4) | (dst & 0x0f);
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = regs;
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    u64::from_le_bytes(b)
}

/// `BPF_DEVCG_DEV_BLOCK` = 1, `BPF_DEVCG_DEV_CHAR` = 2.
fn dev_type(kind: char) -> i32 {
    if kind == 'b' {
        1
    } else {
        2
    }
}

/// `BPF_DEVCG_ACC_MKNOD` = 1, `_READ` = 2, `_WRITE` = 4.
fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |bits, c| {
        bits | match c {
            'm' => 1,
            'r' => 2,
            'w' => 4,
            _ => 0,
        }
    })
}

/// The program for Docker's default rules.
#[cfg(target_endian = "little")]
pub(crate) fn program() -> Vec<u64> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),      // r2 = access_type
        insn(ALU_AND_K, 2, 0, 0, 0xffff), // r2 = type
        insn(LDX_MEM_W, 3, 1, 0, 0),      // r3 = access_type
        insn(ALU_RSH_K, 3, 0, 0, 16),     // r3 = access
        insn(LDX_MEM_W, 4, 1, 4, 0),      // r4 = major
        insn(LDX_MEM_W, 5, 1, 8, 0),      // r5 = minor
    ];
    for (kind, major, minor, access) in ALLOWED_DEVICES {
        let mut block = vec![
            (JMP_JNE_K, 2, dev_type(*kind)),
            (ALU64_MOV_X, 6, 3),
            (ALU_AND_K, 6, !access_bits(access) & 7),
            (JMP_JNE_K, 6, 0),
        ];
        if let Some(major) = major {
            block.push((JMP_JNE_K, 4, *major as i32));
        }
        if let Some(minor) = minor {
            block.push((JMP_JNE_K, 5, *minor as i32));
        }
        // Every jump leaves the block: to the instruction after its end,
        // which is the block's two closing instructions away.
        let len = block.len() as i16 + 2;
        for (i, (code, dst, k)) in block.into_iter().enumerate() {
            let i = i as i16;
            p.push(match code {
                JMP_JNE_K => insn(JMP_JNE_K, dst, 0, len - i - 1, k),
                ALU64_MOV_X => insn(ALU64_MOV_X, dst, k as u8, 0, 0),
                other => insn(other, dst, 0, 0, k),
            });
        }
        p.push(insn(ALU64_MOV_K, 0, 0, 0, 1));
        p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the subset of eBPF that [`program`] uses.
    fn run(p: &[u64], kind: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [access << 16 | kind, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let b = p[pc].to_le_bytes();
            let (code, dst, src) = (b[0], usize::from(b[1] & 0x0f), usize::from(b[1] >> 4));
            let off = i16::from_le_bytes([b[2], b[3]]);
            let imm = i32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            pc += 1;
            match code {
                LDX_MEM_W => r[dst] = u64::from(ctx[off as usize / 4]),
                ALU64_MOV_K => r[dst] = imm as i64 as u64,
                ALU64_MOV_X => r[dst] = r[src],
                ALU_AND_K => r[dst] = u64::from(r[dst] as u32 & imm as u32),
                ALU_RSH_K => r[dst] = u64::from((r[dst] as u32) >> imm),
                JMP_JNE_K => {
                    if r[dst] != imm as i64 as u64 {
                        pc = (pc as isize + off as isize) as usize;
                    }
                }
                JMP_EXIT => return r[0],
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn program_allows_dockers_list_only() {
        let p = program();
        let (blk, chr) = (1, 2);
        let (m, r, w) = (1, 2, 4);
        assert_eq!(run(&p, chr, r | w, 1, 3), 1, "null rw");
        assert_eq!(run(&p, chr, r, 1, 9), 1, "urandom r");
        assert_eq!(run(&p, chr, r | w, 136, 7), 1, "pts/7");
        assert_eq!(run(&p, chr, r, 5, 2), 1, "ptmx");
        assert_eq!(run(&p, blk, m, 8, 0), 1, "mknod any block");
        assert_eq!(run(&p, chr, m, 1, 1), 1, "mknod any char");
        assert_eq!(run(&p, blk, r, 8, 0), 0, "read a disk");
        assert_eq!(run(&p, chr, r, 1, 1), 0, "read /dev/mem");
        assert_eq!(run(&p, chr, r | m, 1, 11), 0, "kmsg");
        assert_eq!(run(&p, blk, r, 1, 3), 0, "block 1:3 is not null");
        assert_eq!(run(&p, chr, w, 137, 0), 0);
    }
}
