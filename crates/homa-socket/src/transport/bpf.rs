//! Classic BPF programs (Linux `Documentation/networking/filter.rst`): the instruction
//! codes the transports' programs use, named. Raw sockets filter by Homa port
//! (`raw.rs`); a sharded UDP port picks its shard by the sender's port (`udp.rs`).

// Instruction classes, sizes, modes and sources, as the kernel's `linux/bpf_common.h`
// numbers them (libc's u32 constants, narrowed to the u16 `code` of `struct sock_filter`).

/// `ldxb 4*([k]&0xf)`: X = 4 × (low nibble of byte k), the IPv4 header length.
pub(crate) const LDX_B_MSH: u16 = (libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH) as u16;
/// `ldh [x + k]`: A = the big-endian 16-bit word at X + k.
pub(crate) const LD_H_IND: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_IND) as u16;
/// `ldh [k]`: A = the big-endian 16-bit word at k.
pub(crate) const LD_H_ABS: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_ABS) as u16;
/// `jeq #k, jt, jf`: skip `jt` instructions if A == k, else `jf`.
pub(crate) const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
/// `ret #k`: keep (at most) k bytes of the datagram; 0 drops it.
pub(crate) const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
/// `mod #k`: A = A % k.
pub(crate) const MOD_K: u16 = (libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K) as u16;
/// `ret a`: return A (for a reuseport program: the index of the socket chosen).
pub(crate) const RET_A: u16 = (libc::BPF_RET | libc::BPF_A) as u16;

/// One BPF instruction that does not jump.
pub(crate) const fn bpf_stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}
