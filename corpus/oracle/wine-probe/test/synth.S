/* synth.dll: small functions with chosen unwind info, to exercise probe.exe itself: faults
 * (non-canonical and unmapped reads, the edge of B), xmm restores, machine frames, handlers,
 * far saves, `ret imm16`, frame-register epilogs, `pop rsp`, `jmp .`, a chained entry and a
 * version-2 entry. Not meant to run; probe.exe only reads it. */
        .text
        .globl  entry
entry:  movl    $1, %eax
        ret

/* frame register rsi: unwinding the body reads through rsi = 0xa006... (non-canonical) */
        .globl  fp_rsi
        .seh_proc fp_rsi
fp_rsi: pushq   %rsi
        .seh_pushreg %rsi
        movq    %rsp, %rsi
        .seh_setframe %rsi, 0
        .seh_endprologue
        nop
        nop
        popq    %rsi
        ret
        .seh_endproc

/* 256 MiB allocation: the return address is read in the no-access reservation above B */
        .globl  big_alloc
        .seh_proc big_alloc
big_alloc:
        subq    $0x10000000, %rsp
        .seh_stackalloc 0x10000000
        .seh_endprologue
        nop
        addq    $0x10000000, %rsp
        ret
        .seh_endproc

/* rsp = B+0x800000+0x7ffff8: the return address is B's last slot (no fault) */
        .globl  edge_ok
        .seh_proc edge_ok
edge_ok:
        subq    $0x7ffff8, %rsp
        .seh_stackalloc 0x7ffff8
        .seh_endprologue
        nop
        addq    $0x7ffff8, %rsp
        ret
        .seh_endproc

/* one slot further: the return address is the first byte past B (fault) */
        .globl  edge_bad
        .seh_proc edge_bad
edge_bad:
        subq    $0x800000, %rsp
        .seh_stackalloc 0x800000
        .seh_endprologue
        nop
        addq    $0x800000, %rsp
        ret
        .seh_endproc

/* xmm saves, near and far, and a far integer save */
        .globl  saves
        .seh_proc saves
saves:  subq    $0x98, %rsp
        .seh_stackalloc 0x98
        movaps  %xmm6, 0x20(%rsp)
        .seh_savexmm %xmm6, 0x20
        movaps  %xmm15, 0x80(%rsp)
        .seh_savexmm %xmm15, 0x80
        movq    %rbx, 0x90(%rsp)
        .seh_savereg %rbx, 0x90
        movq    %r12, 0x90000(%rsp)
        .seh_savereg %r12, 0x90000
        movaps  %xmm9, 0xa0000(%rsp)
        .seh_savexmm %xmm9, 0xa0000
        .seh_endprologue
        nop
        addq    $0x98, %rsp
        ret
        .seh_endproc

/* machine frame without and with an error code */
        .globl  machframe
        .seh_proc machframe
machframe:
        .seh_pushframe
        .seh_endprologue
        nop
        iretq
        .seh_endproc

        .globl  machframe_code
        .seh_proc machframe_code
machframe_code:
        .seh_pushframe code
        .seh_endprologue
        nop
        iretq
        .seh_endproc

/* handlers: only an exception handler, only an unwind handler, both */
        .globl  handler_fn
handler_fn:
        xorl    %eax, %eax
        ret

        .globl  eh_only
        .seh_proc eh_only
eh_only:
        pushq   %rbx
        .seh_pushreg %rbx
        .seh_handler handler_fn, @except
        .seh_endprologue
        nop
        popq    %rbx
        ret
        .seh_endproc

        .globl  uh_only
        .seh_proc uh_only
uh_only:
        pushq   %rbx
        .seh_pushreg %rbx
        .seh_handler handler_fn, @unwind
        .seh_endprologue
        nop
        popq    %rbx
        ret
        .seh_endproc

        .globl  eh_uh
        .seh_proc eh_uh
eh_uh:  pushq   %rbx
        .seh_pushreg %rbx
        .seh_handler handler_fn, @except, @unwind
        .seh_endprologue
        nop
        popq    %rbx
        ret
        .seh_endproc

/* `ret imm16` epilog (Wine adds the immediate, Windows does not) */
        .globl  ret_imm
        .seh_proc ret_imm
ret_imm:
        pushq   %rbx
        .seh_pushreg %rbx
        .seh_endprologue
        nop
        popq    %rbx
        ret     $0x20
        .seh_endproc

/* rbp frame with offset, `lea rsp,[rbp+disp]` epilog (establisher frame inside the epilog) */
        .globl  rbp_frame
        .seh_proc rbp_frame
rbp_frame:
        pushq   %rbp
        .seh_pushreg %rbp
        pushq   %rdi
        .seh_pushreg %rdi
        subq    $0x48, %rsp
        .seh_stackalloc 0x48
        leaq    0x20(%rsp), %rbp
        .seh_setframe %rbp, 0x20
        .seh_endprologue
        nop
        leaq    0x28(%rbp), %rsp
        popq    %rdi
        popq    %rbp
        ret
        .seh_endproc

/* `pop rsp` inside an epilog: the popped value becomes rsp */
        .globl  pop_rsp
        .seh_proc pop_rsp
pop_rsp:
        pushq   %rbx
        .seh_pushreg %rbx
        .seh_endprologue
        nop
        popq    %rsp
        popq    %rbx
        ret
        .seh_endproc

/* `jmp .` after the prolog: Wine's epilog scan follows jumps inside the function and never
 * ends (probe.exe reports error=wine-hang); Windows does not follow them (body) */
        .globl  jmp_self
        .seh_proc jmp_self
jmp_self:
        pushq   %rbx
        .seh_pushreg %rbx
        .seh_endprologue
        nop
1:      jmp     1b
        .seh_endproc

/* chained: `chain_child` (its own 0x28 allocation) continues `chain_parent`'s frame; the
 * unwind info is written by hand below */
        .globl  chain_parent
chain_parent:
        pushq   %rbx
        pushq   %rsi
        nop
chain_parent_end:
        .globl  chain_child
chain_child:
        subq    $0x28, %rsp
        nop
        addq    $0x28, %rsp
        popq    %rsi
        popq    %rbx
        ret
chain_child_end:

/* version-2 unwind info (written by hand below): one epilog described at the end, an exception
 * handler, and a `pop rbx; ret` in the body that no EPILOG code describes */
        .globl  v2_fn
v2_fn:  pushq   %rbx                    /* +0 */
        subq    $0x20, %rsp             /* +1 */
        nop                             /* +5: body */
        popq    %rbx                    /* +6: not an epilog for Windows (not described) */
        ret
        addq    $0x20, %rsp             /* +8: body in version 2 */
        popq    %rbx                    /* +c: the described epilog (2 bytes, at the end) */
        ret
v2_fn_end:

        .section .xdata
        .p2align 2
xdata_v2:
        .byte   2 | (1 << 3), 5, 4, 0   /* version 2, EHANDLER, prolog 5, 4 slots */
        .byte   2, 0x16                 /* EPILOG: size 2, at the end */
        .byte   0, 0x06                 /* EPILOG: padding */
        .byte   5, 0x32                 /* at 5: ALLOC_SMALL 0x20 */
        .byte   1, 0x30                 /* at 1: PUSH_NONVOL rbx */
        .rva    handler_fn
        .long   0
        .p2align 2
xdata_parent:
        .byte   1, 2, 2, 0              /* version 1, prolog 2, 2 codes, no frame register */
        .byte   2, 0x60                 /* at 2: PUSH_NONVOL rsi */
        .byte   1, 0x30                 /* at 1: PUSH_NONVOL rbx */
        .p2align 2
xdata_child:
        .byte   1 | (4 << 3), 4, 1, 0   /* version 1, CHAININFO, prolog 4, 1 code */
        .byte   4, 0x42                 /* at 4: ALLOC_SMALL 0x28 */
        .p2align 2
        .rva    chain_parent, chain_parent_end, xdata_parent

        .section .pdata
        .p2align 2
        .rva    chain_parent, chain_parent_end, xdata_parent
        .rva    chain_child, chain_child_end, xdata_child
        .rva    v2_fn, v2_fn_end, xdata_v2
