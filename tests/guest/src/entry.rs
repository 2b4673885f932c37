//! The ELF entry point.
//!
//! The VMM enters `_start` in 64-bit mode with RSI = &boot_params, a tiny stack at 0x8ff0
//! in low memory we do not own, interrupts off, and SSE still disabled. The guest is built
//! without SSE (see .cargo/config.toml: on a PVM host KVM emulates the guest's instructions
//! and cannot emulate SSE), but SSE is switched on anyway, as any x86_64 kernel does, so
//! that a stray SSE instruction works wherever the CPU really runs the guest. .bss must
//! be zeroed because the loader only copies file bytes.

core::arch::global_asm!(
    ".section .text.entry, \"ax\"",
    ".global _start",
    ".type _start, @function",
    "_start:",
    "cli",
    "cld",
    // CR0: clear EM (bit 2, x87 emulation) and TS (bit 3, lazy FPU trap), set MP (bit 1).
    "mov rax, cr0",
    "and rax, -13",
    "or rax, 2",
    "mov cr0, rax",
    // CR4: OSFXSR (bit 9) lets SSE instructions run, OSXMMEXCPT (bit 10) makes SIMD
    // floating point exceptions #XM rather than #UD.
    "mov rax, cr4",
    "or rax, 0x600",
    "mov cr4, rax",
    // Zero .bss (small statics only: the stack and big buffers live in .noinit, see
    // link.ld). RSI (boot_params) survives: rep stosb only uses RDI, RCX and AL.
    "lea rdi, [rip + __bss_start]",
    "lea rcx, [rip + __bss_end]",
    "sub rcx, rdi",
    "xor eax, eax",
    "rep stosb",
    "lea rsp, [rip + __guest_stack_top]",
    "xor ebp, ebp",
    "mov rdi, rsi",
    "call rust_main",
    "2:",
    "cli",
    "hlt",
    "jmp 2b",
    ".size _start, . - _start",
    // 64 KiB stack in .noinit, 16-byte aligned so the `call` above leaves the ABI
    // alignment.
    ".section .bss.noinit.stack, \"aw\", @nobits",
    ".balign 16",
    "__guest_stack_bottom:",
    ".skip 65536",
    "__guest_stack_top:",
    ".text",
);
