/* Wine stack oracle: records its own stack with RtlCaptureStackBackTrace, then writes a minidump
 * of itself with MiniDumpWriteDump, so a walk of the dump can be compared with the live stack.
 *
 * Call chain: entry -> run_sort -> qsort (msvcrt.dll, Wine's) -> compare -> big_frame (alloca:
 * frame pointer, large frame) -> middle -> leaf.
 *
 * Modes (environment variable XUNWIND_MODE):
 *   fault   leaf records the stack, then writes through a null pointer; a vectored exception
 *           handler writes the dump with MINIDUMP_EXCEPTION_INFORMATION (context at the fault).
 *   thread  leaf records the stack, then blocks in WaitForSingleObject while a second thread
 *           writes the dump (the blocked thread's context is inside ntdll).
 * The dump goes to XUNWIND_DUMP (default stack.dmp), of type XUNWIND_DUMP_TYPE (hex; default 0,
 * MiniDumpNormal: thread stacks, module list, exception). Output on stdout, one line each:
 *   F <hex>   a return address from RtlCaptureStackBackTrace(0, ...), innermost first
 *   U <rip> <rsp> <rbx> <rbp> <rsi> <rdi> <r12> <r13> <r14> <r15>
 *             Wine's RtlVirtualUnwind from leaf outwards (virtual_unwind_stack): the first
 *             line is leaf at its call to virtual_unwind_stack, then one per F line after F 0
 *   T <hex>   the id of the thread that recorded them
 *   D <0|1>   whether MiniDumpWriteDump succeeded
 * Built without a C runtime's help for output (WriteFile), so the same source serves mingw-w64
 * (GNU ABI, COFF symbols) and clang + lld-link (MSVC ABI, PDB, -DXUNWIND_NO_CRT). */
#ifndef XUNWIND_NO_CRT
#include <windows.h>
#include <dbghelp.h>
#include <stdlib.h>
#else
/* The MSVC-ABI build has neither a C runtime nor the SDK's headers: what it calls is declared
 * here and imported through the .def files beside this source (see build.sh). */
typedef void *HANDLE;
typedef unsigned long DWORD;
typedef int BOOL;
typedef long LONG;
typedef unsigned short USHORT;
typedef unsigned long long ULONG_PTR;
typedef struct _EXCEPTION_POINTERS EXCEPTION_POINTERS;
typedef LONG (*PVECTORED_EXCEPTION_HANDLER)(EXCEPTION_POINTERS *);
typedef DWORD (*LPTHREAD_START_ROUTINE)(void *);
#pragma pack(push, 4)
typedef struct {
    DWORD ThreadId;
    EXCEPTION_POINTERS *ExceptionPointers;
    BOOL ClientPointers;
} MINIDUMP_EXCEPTION_INFORMATION;
#pragma pack(pop)
#define WINAPI
#define CALLBACK
#define NULL ((void *)0)
#define FALSE 0
#define MAX_PATH 260
#define INFINITE 0xffffffffu
#define STD_OUTPUT_HANDLE ((DWORD)-11)
#define GENERIC_READ 0x80000000u
#define GENERIC_WRITE 0x40000000u
#define CREATE_ALWAYS 2
#define FILE_ATTRIBUTE_NORMAL 0x80
#define INVALID_HANDLE_VALUE ((HANDLE)(long long)-1)
#define EXCEPTION_CONTINUE_SEARCH 0
#define MiniDumpNormal 0
__declspec(dllimport) BOOL WriteFile(HANDLE, const void *, DWORD, DWORD *, void *);
__declspec(dllimport) HANDLE GetStdHandle(DWORD);
__declspec(dllimport) int lstrlenA(const char *);
__declspec(dllimport) char *lstrcpyA(char *, const char *);
__declspec(dllimport) HANDLE CreateFileA(const char *, DWORD, DWORD, void *, DWORD, DWORD, HANDLE);
__declspec(dllimport) BOOL CloseHandle(HANDLE);
__declspec(dllimport) DWORD GetCurrentThreadId(void);
__declspec(dllimport) HANDLE GetCurrentProcess(void);
__declspec(dllimport) DWORD GetCurrentProcessId(void);
__declspec(dllimport) void ExitProcess(unsigned);
__declspec(dllimport) DWORD WaitForSingleObject(HANDLE, DWORD);
__declspec(dllimport) BOOL SetEvent(HANDLE);
__declspec(dllimport) HANDLE CreateEventA(void *, BOOL, BOOL, const char *);
__declspec(dllimport) HANDLE CreateThread(void *, ULONG_PTR, LPTHREAD_START_ROUTINE, void *, DWORD, DWORD *);
__declspec(dllimport) void *AddVectoredExceptionHandler(unsigned long, PVECTORED_EXCEPTION_HANDLER);
__declspec(dllimport) DWORD GetEnvironmentVariableA(const char *, char *, DWORD);
__declspec(dllimport) USHORT RtlCaptureStackBackTrace(DWORD, DWORD, void **, DWORD *);
__declspec(dllimport) BOOL MiniDumpWriteDump(HANDLE, DWORD, HANDLE, int, MINIDUMP_EXCEPTION_INFORMATION *, void *, void *);
typedef struct { __attribute__((aligned(16))) unsigned char b[0x4d0]; } CONTEXT;
#define UNW_FLAG_NHANDLER 0
__declspec(dllimport) void RtlCaptureContext(CONTEXT *);
__declspec(dllimport) void *RtlLookupFunctionEntry(ULONG_PTR, ULONG_PTR *, void *);
__declspec(dllimport) void *RtlVirtualUnwind(DWORD, ULONG_PTR, ULONG_PTR, void *, CONTEXT *, void **,
                                             ULONG_PTR *, void *);
__declspec(dllimport) void qsort(void *, ULONG_PTR, ULONG_PTR, int (*)(const void *, const void *));
#endif

#define NOINLINE __attribute__((noinline))

static HANDLE go_event, done_event;
static volatile int sink;
static volatile int *volatile null_ptr;
static int called;
static char dump_path[MAX_PATH];
static int thread_mode;
static int dump_type = MiniDumpNormal;

static void put(const char *s)
{
    DWORD n;
    WriteFile(GetStdHandle(STD_OUTPUT_HANDLE), s, lstrlenA(s), &n, NULL);
}

static void put_hex(char tag, ULONG_PTR v)
{
    char buf[32];
    int i = 0, d;
    buf[i++] = tag;
    buf[i++] = ' ';
    for (d = 60; d > 0 && ((v >> d) & 15) == 0; d -= 4)
        ;
    for (; d >= 0; d -= 4)
        buf[i++] = "0123456789abcdef"[(v >> d) & 15];
    buf[i++] = '\n';
    buf[i] = 0;
    put(buf);
}

static BOOL write_dump(EXCEPTION_POINTERS *ep)
{
    MINIDUMP_EXCEPTION_INFORMATION mei;
    HANDLE f = CreateFileA(dump_path, GENERIC_READ | GENERIC_WRITE, 0, NULL, CREATE_ALWAYS,
                           FILE_ATTRIBUTE_NORMAL, NULL);
    BOOL ok;
    if (f == INVALID_HANDLE_VALUE)
        return FALSE;
    mei.ThreadId = GetCurrentThreadId();
    mei.ExceptionPointers = ep;
    mei.ClientPointers = FALSE;
    ok = MiniDumpWriteDump(GetCurrentProcess(), GetCurrentProcessId(), f, dump_type,
                           ep ? &mei : NULL, NULL, NULL);
    CloseHandle(f);
    return ok;
}

static LONG CALLBACK on_fault(EXCEPTION_POINTERS *ep)
{
    BOOL ok = write_dump(ep);
    put_hex('D', ok);
    ExitProcess(0);
    return EXCEPTION_CONTINUE_SEARCH;
}

static DWORD WINAPI dumper(void *arg)
{
    BOOL ok;
    (void)arg;
    WaitForSingleObject(go_event, INFINITE);
    ok = write_dump(NULL);
    put_hex('D', ok);
    SetEvent(done_event);
    return 0;
}

/* A CONTEXT field by its offset (the same in winnt.h's CONTEXT and the bare one above). */
#define CTX(c, off) (*(ULONG_PTR *)((char *)&(c) + (off)))
static const int saved_regs[] = {0xf8 /* rip */, 0x98 /* rsp */, 0x90 /* rbx */, 0xa0 /* rbp */,
                                 0xa8 /* rsi */, 0xb0 /* rdi */, 0xd8, 0xe0, 0xe8, 0xf0 /* r12-15 */};

/* Wine's own unwinder on the live stack: one U line per frame with rip, rsp and the non-volatile
 * registers as RtlVirtualUnwind restores them, from leaf (at its call to this function) out. */
NOINLINE static void virtual_unwind_stack(void)
{
    CONTEXT ctx;
    int i, r;
    RtlCaptureContext(&ctx);
    for (i = 0; i < 64; i++) {
        ULONG_PTR base, establisher;
        void *handler_data;
        void *f = RtlLookupFunctionEntry(CTX(ctx, 0xf8), &base, NULL);
        if (f) {
            RtlVirtualUnwind(UNW_FLAG_NHANDLER, base, CTX(ctx, 0xf8), f, &ctx, &handler_data,
                             &establisher, NULL);
        } else {
            CTX(ctx, 0xf8) = *(ULONG_PTR *)CTX(ctx, 0x98);
            CTX(ctx, 0x98) += 8;
        }
        if (!CTX(ctx, 0xf8))
            break;
        put("U");
        for (r = 0; r < 10; r++) {
            char buf[20];
            int k = 0, d;
            ULONG_PTR v = CTX(ctx, saved_regs[r]);
            buf[k++] = ' ';
            for (d = 60; d > 0 && ((v >> d) & 15) == 0; d -= 4)
                ;
            for (; d >= 0; d -= 4)
                buf[k++] = "0123456789abcdef"[(v >> d) & 15];
            buf[k] = 0;
            put(buf);
        }
        put("\n");
    }
}

NOINLINE static void leaf(int x)
{
    void *frames[64];
    USHORT n = RtlCaptureStackBackTrace(0, 64, frames, NULL), i;
    for (i = 0; i < n; i++)
        put_hex('F', (ULONG_PTR)frames[i]);
    virtual_unwind_stack();
    put_hex('T', GetCurrentThreadId());
    if (thread_mode) {
        SetEvent(go_event);
        WaitForSingleObject(done_event, INFINITE);
    } else {
        *null_ptr = x;
    }
    sink += x;
}

NOINLINE static int middle(int x)
{
    leaf(x + 1);
    return sink + x;
}

NOINLINE static int big_frame(int n)
{
    /* A variable-size alloca needs a frame pointer; 8 KB more makes the frame large (__chkstk). */
    volatile char *p = __builtin_alloca(n);
    volatile char big[8192];
    p[0] = 1;
    big[n & 4095] = 2;
    return middle(p[0] + big[n & 4095]) + 1;
}

static int compare(const void *a, const void *b)
{
    if (!called) {
        called = 1;
        sink += big_frame(64 + *(const int *)a);
    }
    return *(const int *)a - *(const int *)b;
}

NOINLINE static int run_sort(void)
{
    int v[4] = {3, 1, 2, 0};
    qsort(v, 4, sizeof v[0], compare);
    return v[0] + sink;
}

static int run(void)
{
    char mode[16];
    if (!GetEnvironmentVariableA("XUNWIND_DUMP", dump_path, sizeof dump_path))
        lstrcpyA(dump_path, "stack.dmp");
    if (GetEnvironmentVariableA("XUNWIND_MODE", mode, sizeof mode) && mode[0] == 't')
        thread_mode = 1;
    /* A MINIDUMP_TYPE in hex, e.g. 2 for MiniDumpWithFullMemory. */
    if (GetEnvironmentVariableA("XUNWIND_DUMP_TYPE", mode, sizeof mode)) {
        const char *c;
        dump_type = 0;
        for (c = mode; *c; c++)
            dump_type = dump_type * 16 + (*c <= '9' ? *c - '0' : (*c | 32) - 'a' + 10);
    }
    if (thread_mode) {
        go_event = CreateEventA(NULL, FALSE, FALSE, NULL);
        done_event = CreateEventA(NULL, FALSE, FALSE, NULL);
        CreateThread(NULL, 0, dumper, NULL, 0, NULL);
    } else {
        AddVectoredExceptionHandler(1, on_fault);
    }
    return run_sort();
}

#ifdef XUNWIND_NO_CRT
/* MSVC-ABI build without a C runtime: the linker's /entry. */
void entry(void)
{
    ExitProcess(run() & 0);
}
#else
int main(void)
{
    return run() & 0;
}
#endif
