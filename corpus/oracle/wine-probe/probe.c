/*
 * probe.exe - Wine-side oracle for `xunwind pe probe` (CONFORMANCE.md section 3).
 *
 * Loads a PE image, sets up the synthetic thread of the conformance convention and
 * calls the real RtlVirtualUnwind (Wine's ntdll when run under wine64) once per probe,
 * printing one `U ...` line per probe in exactly the format of `xunwind pe probe`.
 *
 * Usage:
 *   probe.exe [options] FILE LIST        LIST: lines "<func-begin-rva> <pc-rva> [kind]" (hex),
 *                                        '#' starts a comment; "-" reads stdin
 *   probe.exe [options] --batch SPEC     SPEC: lines "FILE<TAB>LIST<TAB>OUT"; one wine start
 *                                        for many images, each written to its own OUT
 * Options:
 *   --load    only use LoadLibraryExA (fail if it does not give the file's image)
 *   --map     do not call LoadLibraryExA, map the sections ourselves
 *   --ptrs    append the KNONVOLATILE_CONTEXT_POINTERS to each U line (an extension)
 *   --quiet   no summary on stderr
 *   --verbose one stderr line per faulting call (exception code, faulting pc, address read)
 *   --timeout MS  stop a call that runs this long (Wine can loop forever; default 500, 0 = never)
 *
 * Written for xunwind; see README.md in this directory for the output format, the fault
 * mechanism and the known Wine 8.0 deviations.
 */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <io.h>

#define B_SIZE        (16ull << 20)          /* the synthetic stack buffer B */
#define GUARD_BEFORE  (256ull << 20)         /* no-access reservation below B */
#define SLOT_TAG      0x5AFE000000000000ull
#define GPR_TAG       0xA000000000000000ull
#define XMM_TAG       0xE000000000000000ull

typedef PEXCEPTION_ROUTINE (WINAPI *virtual_unwind_fn)(DWORD, DWORD64, DWORD64, PRUNTIME_FUNCTION,
                                                        PCONTEXT, PVOID *, PDWORD64,
                                                        PKNONVOLATILE_CONTEXT_POINTERS);
/* RtlCaptureContext "returns twice" when the exception handler resumes at its context. */
NTSYSAPI VOID NTAPI RtlCaptureContext(PCONTEXT) __attribute__((returns_twice));
typedef char *(CDECL *dos_name_fn)(const char *);

static virtual_unwind_fn p_unwind;
static int g_ptrs, g_quiet, g_verbose;

/* ---- fault recovery ---------------------------------------------------------------- */

static CONTEXT g_recover;             /* where to resume after a fault */
static volatile LONG g_armed;         /* a guarded RtlVirtualUnwind call is running */
static volatile LONG g_faulted;       /* the last guarded call faulted */
static volatile DWORD g_fault_code;
static volatile ULONG_PTR g_fault_addr;
static volatile ULONG_PTR g_fault_pc;
static volatile LONG g_seq;           /* counts guarded calls, for the watchdog */
static volatile LONG g_hung;          /* the last guarded call was stopped by the watchdog */
static HANDLE g_worker;               /* the thread making the calls */
static DWORD g_timeout_ms = 500;

static LONG CALLBACK fault_handler(EXCEPTION_POINTERS *ep)
{
    if (!g_armed) return EXCEPTION_CONTINUE_SEARCH;
    g_armed = 0;
    g_faulted = 1;
    g_fault_code = ep->ExceptionRecord->ExceptionCode;
    g_fault_addr = ep->ExceptionRecord->NumberParameters >= 2
                       ? ep->ExceptionRecord->ExceptionInformation[1] : 0;
    g_fault_pc = (ULONG_PTR)ep->ExceptionRecord->ExceptionAddress;
    /* Resume just after RtlCaptureContext in guarded_unwind(), with its registers. */
    *ep->ContextRecord = g_recover;
    return EXCEPTION_CONTINUE_EXECUTION;
}

struct call {
    DWORD type;
    DWORD64 base, pc;
    PRUNTIME_FUNCTION fn;
    CONTEXT ctx;
    KNONVOLATILE_CONTEXT_POINTERS ptrs;
    PEXCEPTION_ROUTINE handler;
    PVOID data;
    DWORD64 frame;
    int fault, hang;
};

/* One RtlVirtualUnwind call; returns 1 when it faulted. Everything that must survive the
 * fault lives in memory (c, globals), never only in registers changed after the capture. */
static __attribute__((noinline)) int guarded_unwind(struct call *volatile c)
{
    g_faulted = 0;
    g_hung = 0;
    RtlCaptureContext(&g_recover);
    if (g_faulted) {
        c->fault = 1;
        c->hang = g_hung;
        return 1;
    }
    InterlockedIncrement(&g_seq);
    g_armed = 1;
    c->handler = p_unwind(c->type, c->base, c->pc, c->fn, &c->ctx, &c->data, &c->frame, &c->ptrs);
    g_armed = 0;
    c->fault = 0;
    c->hang = 0;
    return 0;
}

/* Wine's epilog scan follows jumps inside the function, so a jump cycle (`jmp .`) makes its
 * RtlVirtualUnwind loop forever. When one guarded call has run for about g_timeout_ms, stop the
 * worker and send it to the recovery context, as for a fault. */
static DWORD WINAPI watchdog(void *arg)
{
    LONG seen = -1;
    int count = 0;
    (void)arg;
    for (;;) {
        Sleep(g_timeout_ms / 4 + 1);
        LONG s = g_seq;
        if (!g_armed || s != seen) {
            seen = s;
            count = 0;
            continue;
        }
        if (++count < 4) continue;
        count = 0;
        if (SuspendThread(g_worker) == (DWORD)-1) continue;
        if (g_armed && g_seq == s) {
            CONTEXT ctx = g_recover;
            g_armed = 0;
            g_hung = 1;
            g_faulted = 1;
            g_fault_code = 0;
            SetThreadContext(g_worker, &ctx);
        }
        ResumeThread(g_worker);
    }
    return 0;
}

/* ---- the synthetic thread ---------------------------------------------------------- */

static ULONG64 g_B;                   /* address of B */
static CONTEXT g_init;                /* the initial context */

/* Where `xunwind pe probe` puts B. Values inside B print as offsets, so B's address does not
 * matter for them; placing B at the same address makes the rare B-derived value just outside B
 * (rsp = B+16 MiB after popping B's last slot) print the same on both sides too. */
#define B_PREFERRED 0x00007ff000000000ull

static int try_stack(ULONG64 want, ULONG64 after)
{
    char *hint = want ? (char *)(want - GUARD_BEFORE) : NULL;
    char *r = VirtualAlloc(hint, GUARD_BEFORE + B_SIZE + after, MEM_RESERVE, PAGE_NOACCESS);
    if (!r) return 0;
    if (want && (ULONG64)r != want - GUARD_BEFORE) {
        VirtualFree(r, 0, MEM_RELEASE);
        return 0;
    }
    char *b = VirtualAlloc(r + GUARD_BEFORE, B_SIZE, MEM_COMMIT, PAGE_READWRITE);
    if (!b) {
        VirtualFree(r, 0, MEM_RELEASE);
        return 0;
    }
    g_B = (ULONG64)b;
    for (ULONG64 o = 0; o < B_SIZE; o += 8) *(ULONG64 *)(b + o) = SLOT_TAG | o;
    return 1;
}

static int setup_stack(void)
{
    /* A large reservation, no access, with B committed inside it: reads around B fault, and
     * so do reads up to several 32-bit offsets (ALLOC_LARGE, SAVE_NONVOL_FAR) above it. */
    static const ULONG64 after[] = { 32ull << 30, 8ull << 30, 1ull << 30, 64ull << 20, 1ull << 20 };
    for (unsigned i = 0; i < sizeof(after) / sizeof(after[0]); i++)
        if (try_stack(B_PREFERRED, after[i])) return 1;
    fprintf(stderr, "probe: warning: B is not at 0x%llx; B-derived values outside B will print "
                    "differently from xunwind\n", B_PREFERRED);
    for (unsigned i = 0; i < sizeof(after) / sizeof(after[0]); i++)
        if (try_stack(0, after[i])) return 1;
    return 0;
}

static void setup_context(void)
{
    memset(&g_init, 0, sizeof(g_init));
    g_init.ContextFlags = CONTEXT_FULL;
    DWORD64 *gpr = &g_init.Rax;       /* Rax..R15 are contiguous in CONTEXT order */
    for (int n = 0; n < 16; n++) gpr[n] = GPR_TAG | ((DWORD64)n << 48);
    g_init.Rsp = g_B + 0x800000;
    g_init.Rbp = g_B + 0x801000;
    M128A *xmm = &g_init.Xmm0;
    for (int n = 0; n < 16; n++) {
        xmm[n].Low = XMM_TAG | ((ULONGLONG)n << 48);
        xmm[n].High = (LONGLONG)~xmm[n].Low;
    }
    g_init.MxCsr = 0x1f80;
    g_init.FltSave.MxCsr = 0x1f80;
    g_init.FltSave.ControlWord = 0x27f;
    g_init.EFlags = 0x202;
}

/* ---- images ------------------------------------------------------------------------ */

struct image {
    BYTE *base;
    ULONG64 size;                     /* SizeOfImage */
    HMODULE module;                   /* to FreeLibrary, or NULL */
    BYTE *mapped;                     /* our own mapping, or NULL */
    const char *how;
    RUNTIME_FUNCTION *pdata;
    DWORD count;
    DWORD *sorted;                    /* entry indices sorted by BeginAddress (stable) */
};

static BYTE *read_file(const char *path, DWORD *len)
{
    HANDLE h = CreateFileA(path, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING, 0, NULL);
    if (h == INVALID_HANDLE_VALUE) return NULL;
    DWORD size = GetFileSize(h, NULL), got = 0;
    BYTE *buf = malloc(size ? size : 1);
    if (buf && (!ReadFile(h, buf, size, &got, NULL) || got != size)) { free(buf); buf = NULL; }
    CloseHandle(h);
    *len = size;
    return buf;
}

static IMAGE_NT_HEADERS64 *nt_headers(BYTE *p, DWORD len)
{
    if (len < sizeof(IMAGE_DOS_HEADER)) return NULL;
    IMAGE_DOS_HEADER *dos = (IMAGE_DOS_HEADER *)p;
    if (dos->e_magic != IMAGE_DOS_SIGNATURE || dos->e_lfanew < 0 ||
        (DWORD)dos->e_lfanew + sizeof(IMAGE_NT_HEADERS64) > len) return NULL;
    IMAGE_NT_HEADERS64 *nt = (IMAGE_NT_HEADERS64 *)(p + dos->e_lfanew);
    if (nt->Signature != IMAGE_NT_SIGNATURE ||
        nt->OptionalHeader.Magic != IMAGE_NT_OPTIONAL_HDR64_MAGIC) return NULL;
    return nt;
}

/* File offset of an RVA, or -1. */
static long long rva_to_off(IMAGE_NT_HEADERS64 *nt, DWORD len, DWORD rva)
{
    IMAGE_SECTION_HEADER *s = IMAGE_FIRST_SECTION(nt);
    for (int i = 0; i < nt->FileHeader.NumberOfSections; i++) {
        DWORD vs = s[i].Misc.VirtualSize ? s[i].Misc.VirtualSize : s[i].SizeOfRawData;
        if (rva >= s[i].VirtualAddress && rva - s[i].VirtualAddress < vs) {
            DWORD d = rva - s[i].VirtualAddress;
            if (d >= s[i].SizeOfRawData) return -1;
            long long off = (long long)s[i].PointerToRawData + d;
            return off < len ? off : -1;
        }
    }
    return rva < nt->OptionalHeader.SizeOfHeaders && rva < len ? (long long)rva : -1;
}

/* Does the mapped image at `base` hold this file's bytes where the unwinder reads? Compares the
 * identifying header fields, the exception directory and every executable section: Wine may hand
 * back an already loaded builtin of the same name, and a rebased image has relocations applied
 * to its code, while the convention takes code bytes from the file. */
static int same_image(BYTE *base, BYTE *file, DWORD len)
{
    IMAGE_NT_HEADERS64 *fn = nt_headers(file, len);
    IMAGE_NT_HEADERS64 *mn = nt_headers(base, 0x10000000);
    if (!fn || !mn) return 0;
    if (fn->FileHeader.TimeDateStamp != mn->FileHeader.TimeDateStamp ||
        fn->FileHeader.NumberOfSections != mn->FileHeader.NumberOfSections ||
        fn->OptionalHeader.SizeOfImage != mn->OptionalHeader.SizeOfImage ||
        fn->OptionalHeader.CheckSum != mn->OptionalHeader.CheckSum ||
        fn->OptionalHeader.AddressOfEntryPoint != mn->OptionalHeader.AddressOfEntryPoint)
        return 0;
    ULONG64 size = fn->OptionalHeader.SizeOfImage;
    IMAGE_SECTION_HEADER *s = IMAGE_FIRST_SECTION(fn);
    for (int i = 0; i < fn->FileHeader.NumberOfSections; i++) {
        if (!(s[i].Characteristics & (IMAGE_SCN_MEM_EXECUTE | IMAGE_SCN_CNT_CODE))) continue;
        ULONG64 n = s[i].SizeOfRawData;
        if (s[i].Misc.VirtualSize && s[i].Misc.VirtualSize < n) n = s[i].Misc.VirtualSize;
        if (s[i].PointerToRawData >= len || s[i].VirtualAddress >= size) continue;
        if (s[i].PointerToRawData + n > len) n = len - s[i].PointerToRawData;
        if (s[i].VirtualAddress + n > size) n = size - s[i].VirtualAddress;
        if (memcmp(file + s[i].PointerToRawData, base + s[i].VirtualAddress, n)) return 0;
    }
    if (fn->OptionalHeader.NumberOfRvaAndSizes <= IMAGE_DIRECTORY_ENTRY_EXCEPTION) return 1;
    IMAGE_DATA_DIRECTORY *d = &fn->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_EXCEPTION];
    if (!d->Size) return 1;
    long long off = rva_to_off(fn, len, d->VirtualAddress);
    if (off < 0 || off + d->Size > len || d->VirtualAddress + (ULONG64)d->Size > size)
        return 1;                                   /* cannot compare; the rest matched */
    return !memcmp(file + off, base + d->VirtualAddress, d->Size);
}

/* Map the sections ourselves: headers and raw data at their RVAs, the rest zero; pages past
 * SizeOfImage are not committed. No relocations (the unwinder only reads code bytes and
 * RVA-based tables, and relative branches do not need them). */
static BYTE *map_image(BYTE *file, DWORD len, ULONG64 *size)
{
    IMAGE_NT_HEADERS64 *nt = nt_headers(file, len);
    if (!nt) return NULL;
    ULONG64 sz = nt->OptionalHeader.SizeOfImage;
    BYTE *m = VirtualAlloc(NULL, sz, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    if (!m) return NULL;
    DWORD hdr = nt->OptionalHeader.SizeOfHeaders;
    if (hdr > len) hdr = len;
    if (hdr > sz) hdr = (DWORD)sz;
    memcpy(m, file, hdr);
    IMAGE_SECTION_HEADER *s = IMAGE_FIRST_SECTION(nt);
    for (int i = 0; i < nt->FileHeader.NumberOfSections; i++) {
        ULONG64 n = s[i].SizeOfRawData;
        if (s[i].Misc.VirtualSize && s[i].Misc.VirtualSize < n) n = s[i].Misc.VirtualSize;
        if (s[i].PointerToRawData >= len) continue;
        if (s[i].PointerToRawData + n > len) n = len - s[i].PointerToRawData;
        if (s[i].VirtualAddress >= sz) continue;
        if (s[i].VirtualAddress + n > sz) n = sz - s[i].VirtualAddress;
        memcpy(m + s[i].VirtualAddress, file + s[i].PointerToRawData, n);
    }
    *size = sz;
    return m;
}

enum load_mode { LOAD_AUTO, LOAD_ONLY, MAP_ONLY };

static char *dos_path(const char *path)
{
    static dos_name_fn p_dos;
    static int looked;
    if (!looked) {
        looked = 1;
        p_dos = (dos_name_fn)GetProcAddress(GetModuleHandleA("kernel32.dll"), "wine_get_dos_file_name");
    }
    if (path[0] == '/') {
        if (p_dos) {
            WCHAR *w = (WCHAR *)p_dos(path);
            if (w) {
                char *a = malloc(MAX_PATH * 4);
                WideCharToMultiByte(CP_ACP, 0, w, -1, a, MAX_PATH * 4, NULL, NULL);
                HeapFree(GetProcessHeap(), 0, w);
                return a;
            }
        }
        char *a = malloc(strlen(path) + 3);
        sprintf(a, "Z:%s", path);
        for (char *q = a; *q; q++) if (*q == '/') *q = '\\';
        return a;
    }
    char *a = malloc(MAX_PATH * 4);
    if (!GetFullPathNameA(path, MAX_PATH * 4, a, NULL)) strcpy(a, path);
    return a;
}

static RUNTIME_FUNCTION *cmp_pdata;
static int cmp_begin(const void *a, const void *b)
{
    DWORD x = *(const DWORD *)a, y = *(const DWORD *)b;
    DWORD bx = cmp_pdata[x].BeginAddress, by = cmp_pdata[y].BeginAddress;
    if (bx != by) return bx < by ? -1 : 1;
    return x < y ? -1 : x > y;
}

static int load_image(const char *path, enum load_mode mode, struct image *img)
{
    memset(img, 0, sizeof(*img));
    char *dp = dos_path(path);
    DWORD len = 0;
    BYTE *file = read_file(dp, &len);
    if (!file) {
        fprintf(stderr, "probe: cannot read %s (%s): error %lu\n", path, dp, GetLastError());
        free(dp);
        return 0;
    }
    if (mode != MAP_ONLY) {
        static const DWORD flags[] = { DONT_RESOLVE_DLL_REFERENCES,
                                       DONT_RESOLVE_DLL_REFERENCES | LOAD_IGNORE_CODE_AUTHZ_LEVEL,
                                       LOAD_LIBRARY_AS_IMAGE_RESOURCE };
        for (unsigned i = 0; i < 3 && !img->base; i++) {
            HMODULE h = LoadLibraryExA(dp, NULL, flags[i]);
            if (!h) continue;
            BYTE *base = (BYTE *)((ULONG_PTR)h & ~(ULONG_PTR)3);
            if (same_image(base, file, len)) {
                img->module = h;
                img->base = base;
                img->size = nt_headers(base, 0x10000000)->OptionalHeader.SizeOfImage;
                img->how = i == 2 ? "LoadLibraryExA(LOAD_LIBRARY_AS_IMAGE_RESOURCE)"
                                  : "LoadLibraryExA(DONT_RESOLVE_DLL_REFERENCES)";
            } else {
                if (!g_quiet)
                    fprintf(stderr, "probe: %s: LoadLibraryExA's image differs from the file (an "
                                    "already loaded module of that name, or code relocated)\n", path);
                FreeLibrary(h);
                break;
            }
        }
        if (!img->base && mode == LOAD_ONLY) {
            fprintf(stderr, "probe: %s: LoadLibraryExA did not give this file's image\n", path);
            free(file);
            free(dp);
            return 0;
        }
    }
    if (!img->base) {
        img->mapped = map_image(file, len, &img->size);
        img->base = img->mapped;
        img->how = "own mapping";
        if (!img->base) {
            fprintf(stderr, "probe: %s: not a PE32+ image\n", path);
            free(file);
            free(dp);
            return 0;
        }
    }
    free(file);
    free(dp);
    IMAGE_NT_HEADERS64 *nt = nt_headers(img->base, (DWORD)img->size);
    if (nt && nt->OptionalHeader.NumberOfRvaAndSizes > IMAGE_DIRECTORY_ENTRY_EXCEPTION) {
        IMAGE_DATA_DIRECTORY *d = &nt->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_EXCEPTION];
        if (d->Size && d->VirtualAddress < img->size && d->Size <= img->size - d->VirtualAddress) {
            img->pdata = (RUNTIME_FUNCTION *)(img->base + d->VirtualAddress);
            img->count = d->Size / sizeof(RUNTIME_FUNCTION);
        }
    }
    img->sorted = malloc((img->count ? img->count : 1) * sizeof(DWORD));
    for (DWORD i = 0; i < img->count; i++) img->sorted[i] = i;
    cmp_pdata = img->pdata;
    qsort(img->sorted, img->count, sizeof(DWORD), cmp_begin);
    return 1;
}

static void unload_image(struct image *img)
{
    if (img->module) FreeLibrary(img->module);
    if (img->mapped) VirtualFree(img->mapped, 0, MEM_RELEASE);
    free(img->sorted);
    memset(img, 0, sizeof(*img));
}

/* The entry whose BeginAddress is `begin`: the one Windows' binary search over the table (as
 * stored) lands on, else the first in table order (the table may be unsorted). */
static RUNTIME_FUNCTION *entry_by_begin(struct image *img, DWORD begin)
{
    if (!img->count) return NULL;
    long lo = 0, hi = (long)img->count - 1;
    while (lo <= hi) {
        long mid = (lo + hi) / 2;
        RUNTIME_FUNCTION *f = &img->pdata[mid];
        if (begin < f->BeginAddress) hi = mid - 1;
        else if (begin >= f->EndAddress) lo = mid + 1;
        else {
            if (f->BeginAddress == begin) return f;
            break;
        }
    }
    lo = 0; hi = (long)img->count;          /* first index (lowest table position) with begin */
    while (lo < hi) {
        long mid = (lo + hi) / 2;
        if (img->pdata[img->sorted[mid]].BeginAddress < begin) lo = mid + 1; else hi = mid;
    }
    if ((DWORD)lo < img->count && img->pdata[img->sorted[lo]].BeginAddress == begin)
        return &img->pdata[img->sorted[lo]];
    return NULL;
}

/* ---- output ------------------------------------------------------------------------ */

static struct image *g_img;

static char *put_v(char *p, ULONG64 v)
{
    if (v - g_B < B_SIZE) return p + sprintf(p, "B+0x%llx", v - g_B);
    if (v - (ULONG64)g_img->base < g_img->size)
        return p + sprintf(p, "I+0x%llx", v - (ULONG64)g_img->base);
    return p + sprintf(p, "0x%llx", v);
}

static ULONG64 rva_of(const void *p)
{
    return p ? (ULONG64)p - (ULONG64)g_img->base : 0;
}

/* Register results of two calls, for the flag-independence check. */
static int same_regs(const struct call *a, const struct call *b)
{
    if (a->fault != b->fault) return 0;
    if (a->fault) return 1;
    if (memcmp(&a->ctx.Rax, &b->ctx.Rax, 16 * sizeof(DWORD64)) || a->ctx.Rip != b->ctx.Rip ||
        memcmp(&a->ctx.Xmm0, &b->ctx.Xmm0, 16 * sizeof(M128A)) || a->frame != b->frame ||
        memcmp(&a->ptrs, &b->ptrs, sizeof(a->ptrs)))
        return 0;
    return 1;
}

struct stats {
    unsigned long long probes, faults, hangs, errors, mismatches;
};


static void probe_one(FILE *out, DWORD begin, DWORD pc, const char *kind, struct stats *st)
{
    static struct call c[3];
    static const DWORD types[3] = { UNW_FLAG_EHANDLER, UNW_FLAG_UHANDLER, UNW_FLAG_NHANDLER };
    char line[2048], *p = line;

    st->probes++;
    RUNTIME_FUNCTION *f = entry_by_begin(g_img, begin);
    if (!f) {
        st->errors++;
        fprintf(out, "E func=%lx pc=%lx kind=%s error=no-function\n", begin, pc, kind);
        return;
    }
    /* What RtlLookupFunctionEntry hands a caller: an indirect entry is followed. */
    RUNTIME_FUNCTION *use = f;
    for (int depth = 0; (use->UnwindData & 1) && depth < 8; depth++) {
        DWORD rva = use->UnwindData & ~1u;
        if ((ULONG64)rva + sizeof(RUNTIME_FUNCTION) > g_img->size) break;
        use = (RUNTIME_FUNCTION *)(g_img->base + rva);
    }
    for (int i = 0; i < 3; i++) {
        c[i].type = types[i];
        c[i].base = (DWORD64)g_img->base;
        c[i].pc = (DWORD64)g_img->base + pc;
        c[i].fn = use;
        c[i].ctx = g_init;
        c[i].ctx.Rip = c[i].pc;
        memset(&c[i].ptrs, 0, sizeof(c[i].ptrs));
        c[i].handler = NULL;
        c[i].data = NULL;
        c[i].frame = 0;
        if (guarded_unwind(&c[i]) && g_verbose) {
            if (c[i].hang)
                fprintf(stderr, "probe: hang func=%lx pc=%lx type=%lu: stopped after %lu ms\n",
                        begin, pc, types[i], g_timeout_ms);
            else
                fprintf(stderr, "probe: fault func=%lx pc=%lx type=%lu: code %08lx at %p reading %p\n",
                        begin, pc, types[i], g_fault_code, (void *)g_fault_pc, (void *)g_fault_addr);
        }
        if (c[i].hang) {
            /* No result to print: Windows does not follow jumps, so it never loops here. */
            st->hangs++;
            fprintf(out, "E func=%lx pc=%lx kind=%s error=wine-hang\n", begin, pc, kind);
            return;
        }
    }
    int fault = c[0].fault || c[1].fault;
    if (fault) st->faults++;
    if (!same_regs(&c[0], &c[1]) || !same_regs(&c[0], &c[2])) {
        st->mismatches++;
        fprintf(stderr, "probe: func=%lx pc=%lx: register results depend on the handler flag\n",
                begin, pc);
    }
    const CONTEXT *x = &c[0].ctx;
    p += sprintf(p, "U func=%lx end=%lx pc=%lx kind=%s rip=", begin, f->EndAddress, pc, kind);
    p = put_v(p, x->Rip);
    static const struct { const char *name; int n; } gprs[] = {
        { "rsp", 4 }, { "rbp", 5 }, { "rbx", 3 }, { "rsi", 6 }, { "rdi", 7 },
        { "r12", 12 }, { "r13", 13 }, { "r14", 14 }, { "r15", 15 } };
    const DWORD64 *g = &x->Rax;
    for (int i = 0; i < 9; i++) {
        p += sprintf(p, " %s=", gprs[i].name);
        p = put_v(p, g[gprs[i].n]);
    }
    const M128A *xm = &x->Xmm0;
    for (int n = 6; n < 16; n++) {
        p += sprintf(p, " x%d=", n);
        p = put_v(p, xm[n].Low);
    }
    p += sprintf(p, " eh=0x%llx uh=0x%llx hd=0x%llx frame=",
                 c[0].fault ? 0 : rva_of(c[0].handler), c[1].fault ? 0 : rva_of(c[1].handler),
                 c[0].fault ? 0 : rva_of(c[0].data));
    p = put_v(p, c[0].frame);
    p += sprintf(p, " fault=%d", fault);
    if (g_ptrs) {
        /* Extension: where each non-volatile register was restored from ('-' = not restored). */
        const KNONVOLATILE_CONTEXT_POINTERS *k = &c[0].ptrs;
        static const struct { const char *name; int n; } nv[] = {
            { "rbx", 3 }, { "rbp", 5 }, { "rsi", 6 }, { "rdi", 7 },
            { "r12", 12 }, { "r13", 13 }, { "r14", 14 }, { "r15", 15 } };
        for (int i = 0; i < 8; i++) {
            p += sprintf(p, " p.%s=", nv[i].name);
            if (k->IntegerContext[nv[i].n]) p = put_v(p, (ULONG64)k->IntegerContext[nv[i].n]);
            else *p++ = '-';
        }
        for (int n = 6; n < 16; n++) {
            p += sprintf(p, " p.x%d=", n);
            if (k->FloatingContext[n]) p = put_v(p, (ULONG64)k->FloatingContext[n]);
            else *p++ = '-';
        }
    }
    *p++ = '\n';
    fwrite(line, 1, p - line, out);
}

/* ---- driver ------------------------------------------------------------------------ */

static int run_list(const char *file, const char *list, FILE *out, enum load_mode mode,
                    struct stats *st)
{
    struct image img;
    if (!load_image(file, mode, &img)) return 0;
    g_img = &img;
    if (!g_quiet)
        fprintf(stderr, "probe: %s: %s at %p, SizeOfImage 0x%llx, %lu .pdata entries\n", file,
                img.how, img.base, img.size, img.count);
    FILE *in = stdin;
    char *dl = NULL;
    if (strcmp(list, "-")) {
        dl = dos_path(list);
        in = fopen(dl, "r");
    }
    if (!in) {
        fprintf(stderr, "probe: cannot open %s\n", list);
        unload_image(&img);
        free(dl);
        return 0;
    }
    char buf[1024];
    unsigned long lineno = 0;
    while (fgets(buf, sizeof(buf), in)) {
        lineno++;
        char *h = strchr(buf, '#');
        if (h) *h = 0;
        char a[64], b[64], k[256];
        int n = sscanf(buf, "%63s %63s %255s", a, b, k);
        if (n <= 0) continue;
        char *ea, *eb;
        unsigned long long fa = strtoull(a, &ea, 16), pb = n >= 2 ? strtoull(b, &eb, 16) : 0;
        if (n < 2 || *ea || *eb || fa > 0xffffffffull || pb > 0xffffffffull) {
            st->errors++;
            fprintf(out, "E line=%lu error=bad-line\n", lineno);
            continue;
        }
        probe_one(out, (DWORD)fa, (DWORD)pb, n >= 3 ? k : "probe", st);
    }
    if (in != stdin) fclose(in);
    free(dl);
    unload_image(&img);
    return 1;
}

int main(int argc, char **argv)
{
    enum load_mode mode = LOAD_AUTO;
    const char *batch = NULL, *pos[2] = { NULL, NULL };
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--load")) mode = LOAD_ONLY;
        else if (!strcmp(argv[i], "--map")) mode = MAP_ONLY;
        else if (!strcmp(argv[i], "--ptrs")) g_ptrs = 1;
        else if (!strcmp(argv[i], "--quiet")) g_quiet = 1;
        else if (!strcmp(argv[i], "--verbose")) g_verbose = 1;
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = argv[++i];
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) g_timeout_ms = strtoul(argv[++i], NULL, 0);
        else if (npos < 2) pos[npos++] = argv[i];
        else npos = 3;
    }
    if (batch ? npos != 0 : npos != 2) {
        fprintf(stderr, "usage: probe.exe [--load|--map] [--ptrs] [--quiet|--verbose] [--timeout MS] FILE LIST\n"
                        "       probe.exe [--load|--map] [--ptrs] [--quiet|--verbose] [--timeout MS] --batch SPEC\n");
        return 2;
    }
    _setmode(_fileno(stdout), _O_BINARY);
    static char obuf[1 << 20];
    setvbuf(stdout, obuf, _IOFBF, sizeof(obuf));

    HMODULE ntdll = GetModuleHandleA("ntdll.dll");
    p_unwind = (virtual_unwind_fn)GetProcAddress(ntdll, "RtlVirtualUnwind");
    if (!p_unwind) {
        fprintf(stderr, "probe: ntdll lacks RtlVirtualUnwind\n");
        return 1;
    }
    if (!setup_stack()) {
        fprintf(stderr, "probe: cannot allocate the stack buffer\n");
        return 1;
    }
    setup_context();
    AddVectoredExceptionHandler(1, fault_handler);
    DuplicateHandle(GetCurrentProcess(), GetCurrentThread(), GetCurrentProcess(), &g_worker,
                    THREAD_ALL_ACCESS, FALSE, 0);
    if (g_timeout_ms) CloseHandle(CreateThread(NULL, 0, watchdog, NULL, 0, NULL));

    struct stats st = { 0 };
    LARGE_INTEGER f, t0, t1;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&t0);
    int ok = 1;
    if (!batch) {
        ok = run_list(pos[0], pos[1], stdout, mode, &st);
    } else {
        char *db = dos_path(batch);
        FILE *spec = fopen(db, "r");
        free(db);
        if (!spec) {
            fprintf(stderr, "probe: cannot open %s\n", batch);
            return 1;
        }
        char buf[4096];
        while (fgets(buf, sizeof(buf), spec)) {
            buf[strcspn(buf, "\r\n")] = 0;
            if (!buf[0] || buf[0] == '#') continue;
            char *file = buf, *list = strchr(file, '\t'), *outp = list ? strchr(list + 1, '\t') : NULL;
            if (!outp) {
                fprintf(stderr, "probe: batch line needs FILE<TAB>LIST<TAB>OUT: %s\n", buf);
                ok = 0;
                continue;
            }
            *list++ = 0;
            *outp++ = 0;
            char *dout = dos_path(outp);
            FILE *out = fopen(dout, "wb");
            free(dout);
            if (!out) {
                fprintf(stderr, "probe: cannot create %s\n", outp);
                ok = 0;
                continue;
            }
            setvbuf(out, NULL, _IOFBF, 1 << 20);
            if (!run_list(file, list, out, mode, &st)) ok = 0;
            fclose(out);
        }
        fclose(spec);
    }
    fflush(stdout);
    QueryPerformanceCounter(&t1);
    double secs = (double)(t1.QuadPart - t0.QuadPart) / f.QuadPart;
    if (!g_quiet)
        fprintf(stderr, "probe: %llu probes (%llu faulted, %llu wine hangs, %llu other errors, %llu "
                        "flag mismatches) in %.3f s: %.0f probes/s\n", st.probes, st.faults, st.hangs,
                st.errors, st.mismatches, secs, secs > 0 ? st.probes / secs : 0.0);
    return ok ? 0 : 1;
}
