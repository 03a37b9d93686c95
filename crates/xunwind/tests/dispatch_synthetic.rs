//! The dispatch model on hand-built images: `__C_specific_handler` scope semantics in both
//! phases, GCC LSDA cleanups and catches, and JIT code registered in dynamic function tables.

use xunwind::dispatch::STATUS_GCC_THROW;
use xunwind::pe::{PeImage, RuntimeFunction};
use xunwind::{
    CodeImages, Decisions, DispatchOptions, Event, ExceptionResolver, Fault, FilterResult, Outcome,
    PeModule, Reg, Regs, SliceMemory,
};

const B: u64 = 0x1_4000_0000;
const STACK: u64 = 0x7_0000;
const FAULT_CODE: u32 = 0xc000_0005;

/// UNWIND_INFO v1: `sub rsp, 0x28` (4-byte prolog), optional handler and its data.
fn uinfo(handler: Option<(u32, Vec<u8>)>) -> Vec<u8> {
    let flags = if handler.is_some() { 3 } else { 0 };
    let mut v = vec![1 | (flags << 3), 4, 1, 0, 4, 0x42, 0, 0];
    if let Some((h, data)) = handler {
        v.extend(h.to_le_bytes());
        v.extend(data);
    }
    v
}

fn scopes(recs: &[[u32; 4]]) -> Vec<u8> {
    let mut d = (recs.len() as u32).to_le_bytes().to_vec();
    for r in recs {
        d.extend(r.iter().flat_map(|v| v.to_le_bytes()));
    }
    d
}

struct Img {
    bytes: Vec<u8>,
    pdata: Vec<RuntimeFunction>,
    next_info: u32,
}

impl Img {
    fn new() -> Self {
        Img {
            bytes: vec![0xcc; 0x4000],
            pdata: Vec::new(),
            next_info: 0x2000,
        }
    }

    fn func(&mut self, begin: u32, end: u32, info: Vec<u8>) {
        let at = self.next_info as usize;
        self.bytes[at..at + info.len()].copy_from_slice(&info);
        self.pdata.push(RuntimeFunction {
            begin,
            end,
            unwind_data: self.next_info,
        });
        self.next_info += (info.len() as u32 + 3) & !3;
    }

    fn finish(mut self) -> Vec<u8> {
        self.pdata.sort_by_key(|f| f.begin);
        let mut at = 0x3000usize;
        for f in &self.pdata {
            for v in [f.begin, f.end, f.unwind_data] {
                self.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
                at += 4;
            }
        }
        self.bytes
    }
}

const C_HANDLER: u32 = 0x1f00;
const GXX_HANDLER: u32 = 0x1f10;

/// main -> middle -> inner -> deep (faults). Return addresses sit inside the scopes.
fn seh_image() -> (Vec<u8>, u32) {
    let mut m = Img::new();
    // main: __try { __try { middle() } __finally {fin_main} } __except(1) {0x1080}
    m.func(
        0x1000,
        0x1100,
        uinfo(Some((
            C_HANDLER,
            scopes(&[[0x1018, 0x1030, 0x1800, 0], [0x1010, 0x1040, 1, 0x1080]]),
        ))),
    );
    // middle: __try { __try { inner() } __except(filter 0x1500) {0x1180} } __finally {0x1600}
    m.func(
        0x1100,
        0x1200,
        uinfo(Some((
            C_HANDLER,
            scopes(&[
                [0x1110, 0x1140, 0x1500, 0x1180],
                [0x1110, 0x1150, 0x1600, 0],
            ]),
        ))),
    );
    // inner: __try { deep() } __finally {0x1700}
    m.func(
        0x1200,
        0x1300,
        uinfo(Some((C_HANDLER, scopes(&[[0x1210, 0x1240, 0x1700, 0]])))),
    );
    // deep: no handler.
    m.func(0x1300, 0x1380, uinfo(None));
    let n = m.pdata.len() as u32;
    (m.finish(), n)
}

/// A stack of four 0x30-byte frames (0x28 of locals + return address) whose return
/// addresses are `ras`, then a zero return address.
fn stack(ras: &[u64]) -> Vec<u8> {
    let mut s = vec![0u8; 0x400];
    let mut at = 0x28usize;
    for ra in ras.iter().chain([&0u64]) {
        s[at..at + 8].copy_from_slice(&ra.to_le_bytes());
        at += 0x30;
    }
    s
}

fn fault(rip: u64, code: u32, params: Vec<u64>) -> Fault {
    let mut regs = Regs::new();
    regs.set_rip(rip);
    regs.set(Reg::Rsp, STACK);
    Fault {
        regs,
        code,
        flags: 0,
        parameters: params,
    }
}

fn images(bytes: &[u8], n: u32) -> CodeImages<'_> {
    let img = PeImage::from_parts(bytes, B, 0x3000, n * 12);
    let mut m = PeModule::from_image("seh.exe", B, img);
    m.add_symbol(C_HANDLER, "__C_specific_handler");
    m.add_symbol(GXX_HANDLER, "__gxx_personality_seh0");
    let mut c = CodeImages::new();
    c.add(m);
    c
}

fn decide(filters: &[(u64, FilterResult)]) -> Decisions {
    Decisions {
        filters: filters.iter().copied().collect(),
        thrown_type: None,
    }
}

#[test]
fn seh_filters_finally_and_except_in_windows_order() {
    let (bytes, n) = seh_image();
    let imgs = images(&bytes, n);
    let st = stack(&[B + 0x1225, B + 0x1125, B + 0x1020]);
    let mem = SliceMemory::new(STACK, &st);
    let r = ExceptionResolver::new(&imgs, DispatchOptions::default());
    let f = fault(B + 0x1310, FAULT_CODE, vec![]);

    // Without the filter's result, the model stops there.
    let d = r.dispatch(&f, &mem, &Decisions::default()).unwrap();
    assert!(d.events.is_empty());
    assert_eq!(
        d.outcome,
        Outcome::NeedsFilter {
            frame: 2,
            function: B + 0x1100,
            address: B + 0x1500
        }
    );

    let d = r
        .dispatch(
            &f,
            &mem,
            &decide(&[(B + 0x1500, FilterResult::ContinueSearch)]),
        )
        .unwrap();
    assert_eq!(
        d.frames.iter().map(|f| f.number).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert_eq!(
        d.events,
        [
            Event::Filter {
                frame: 2,
                function: B + 0x1100,
                scope: 0,
                address: Some(B + 0x1500),
                result: FilterResult::ContinueSearch
            },
            Event::Filter {
                frame: 3,
                function: B + 0x1000,
                scope: 1,
                address: None,
                result: FilterResult::ExecuteHandler
            },
            Event::Finally {
                frame: 1,
                function: B + 0x1200,
                scope: 0,
                address: B + 0x1700
            },
            Event::Finally {
                frame: 2,
                function: B + 0x1100,
                scope: 1,
                address: B + 0x1600
            },
            // In the target frame, the __finally nested inside the __try being left runs.
            Event::Finally {
                frame: 3,
                function: B + 0x1000,
                scope: 0,
                address: B + 0x1800
            },
        ]
    );
    assert_eq!(
        d.outcome,
        Outcome::Except {
            frame: 3,
            function: B + 0x1000,
            address: B + 0x1080
        }
    );

    // The filter takes it: middle's own __finally encloses the target scope's entry in
    // table order after it, so the scan stops at the target scope and it does not run.
    let d = r
        .dispatch(
            &f,
            &mem,
            &decide(&[(B + 0x1500, FilterResult::ExecuteHandler)]),
        )
        .unwrap();
    let kinds: Vec<_> = d
        .events
        .iter()
        .map(|e| match e {
            Event::Filter { frame, .. } => ("filter", *frame),
            Event::Finally { frame, .. } => ("finally", *frame),
            _ => ("other", 0),
        })
        .collect();
    assert_eq!(kinds, [("filter", 2), ("finally", 1)]);
    assert_eq!(
        d.outcome,
        Outcome::Except {
            frame: 2,
            function: B + 0x1100,
            address: B + 0x1180
        }
    );

    let d = r
        .dispatch(
            &f,
            &mem,
            &decide(&[(B + 0x1500, FilterResult::ContinueExecution)]),
        )
        .unwrap();
    assert_eq!(d.outcome, Outcome::Continue { frame: 2 });
    assert!(d.events.iter().all(|e| e.phase() == 1));
}

#[test]
fn scopes_compare_the_return_address_itself() {
    // x64 __C_specific_handler compares ControlPc (the return address, not minus one):
    // a call whose return address is the scope's end is outside it.
    let (bytes, n) = seh_image();
    let imgs = images(&bytes, n);
    let r = ExceptionResolver::new(&imgs, DispatchOptions::default());
    let st = stack(&[B + 0x1240, B + 0x1125, B + 0x1010]);
    let mem = SliceMemory::new(STACK, &st);
    let d = r
        .dispatch(
            &fault(B + 0x1310, FAULT_CODE, vec![]),
            &mem,
            &decide(&[(B + 0x1500, FilterResult::ContinueSearch)]),
        )
        .unwrap();
    // inner's __finally [0x1210, 0x1240) does not cover 0x1240; main's [0x1018,..) does not
    // cover 0x1010, but its __except [0x1010, 0x1040) does.
    assert!(!d
        .events
        .iter()
        .any(|e| matches!(e, Event::Finally { frame: 1, .. })));
    assert!(!d
        .events
        .iter()
        .any(|e| matches!(e, Event::Finally { frame: 3, .. })));
    assert!(matches!(d.outcome, Outcome::Except { frame: 3, .. }));

    // No scope anywhere: unhandled at the end of the stack.
    let st = stack(&[B + 0x1290, B + 0x1190, B + 0x1090]);
    let mem = SliceMemory::new(STACK, &st);
    let d = r
        .dispatch(
            &fault(B + 0x1310, FAULT_CODE, vec![]),
            &mem,
            &Decisions::default(),
        )
        .unwrap();
    assert!(d.events.is_empty());
    assert_eq!(
        d.outcome,
        Outcome::Unhandled {
            reason: "end of stack"
        }
    );
}

#[test]
fn jit_code_in_dynamic_tables_is_unwound_and_dispatched() {
    let (bytes, n) = seh_image();
    let mut imgs = images(&bytes, n);
    // JIT region: `deep`'s twin at J+0x10..J+0x80, unwind info at J+0x100.
    let j = 0x5000_0000u64;
    let mut code = vec![0xccu8; 0x200];
    let info = uinfo(None);
    code[0x100..0x100 + info.len()].copy_from_slice(&info);
    let code: &'static [u8] = Box::leak(code.into_boxed_slice());
    let r0 = {
        let r = ExceptionResolver::new(&imgs, DispatchOptions::default());
        // Unregistered: a leaf, whose "return address" is the stack's first word (0): lost.
        let st = stack(&[B + 0x1225, B + 0x1125, B + 0x1020]);
        let mem = SliceMemory::new(STACK, &st);
        r.dispatch(
            &fault(j + 0x20, FAULT_CODE, vec![]),
            &mem,
            &Decisions::default(),
        )
        .unwrap()
        .outcome
    };
    assert_eq!(
        r0,
        Outcome::Unhandled {
            reason: "end of stack"
        }
    );
    let id = imgs.dynamic.add_function_table(
        vec![RuntimeFunction {
            begin: 0x10,
            end: 0x80,
            unwind_data: 0x100,
        }],
        j,
        code,
    );
    let st = stack(&[B + 0x1225, B + 0x1125, B + 0x1020]);
    let mem = SliceMemory::new(STACK, &st);
    let d = {
        let r = ExceptionResolver::new(&imgs, DispatchOptions::default());
        r.dispatch(
            &fault(j + 0x20, FAULT_CODE, vec![]),
            &mem,
            &decide(&[(B + 0x1500, FilterResult::ContinueSearch)]),
        )
        .unwrap()
    };
    assert_eq!(d.frames[0].function, Some(j + 0x10));
    assert!(matches!(d.outcome, Outcome::Except { frame: 3, .. }));
    assert_eq!(d.events.len(), 5);
    // A callback table answers the same way.
    imgs.dynamic.delete_function_table(id).unwrap();
    imgs.dynamic
        .install_function_table_callback(
            j | 3,
            j,
            0x200,
            Box::new(|_pc| {
                Some(RuntimeFunction {
                    begin: 0x10,
                    end: 0x80,
                    unwind_data: 0x100,
                })
            }),
            code,
        )
        .unwrap();
    let r = ExceptionResolver::new(&imgs, DispatchOptions::default());
    let d = r
        .dispatch(
            &fault(j + 0x20, FAULT_CODE, vec![]),
            &mem,
            &decide(&[(B + 0x1500, FilterResult::ContinueSearch)]),
        )
        .unwrap();
    assert!(matches!(d.outcome, Outcome::Except { frame: 3, .. }));
}

fn uleb(v: u64, out: &mut Vec<u8>) {
    let mut v = v;
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// An LSDA with absolute (absptr) type-table entries: call sites (start, len, lp, action),
/// actions as (filter, next-displacement) byte pairs, types nearest-first.
fn lsda(sites: &[(u64, u64, u64, u64)], actions: &[u8], types: &[u64]) -> Vec<u8> {
    let mut cs = Vec::new();
    for &(s, l, lp, a) in sites {
        for v in [s, l, lp, a] {
            uleb(v, &mut cs);
        }
    }
    let mut d = vec![0xff, 0x00];
    let rest = 2 + cs.len() + actions.len() + 8 * types.len();
    uleb(rest as u64, &mut d);
    d.push(0x01);
    uleb(cs.len() as u64, &mut d);
    d.extend(cs);
    d.extend(actions);
    for t in types.iter().rev() {
        d.extend(t.to_le_bytes());
    }
    d
}

#[test]
fn gcc_cleanups_then_the_matching_catch() {
    const INT_TI: u64 = 0x1_4000_3800;
    const CHAR_TI: u64 = 0x1_4000_3900;
    let mut m = Img::new();
    // top: call at 0x1008..0x1010 (ret 0x100c) guarded by catch(int) -> lp 0x1050.
    let top = lsda(&[(0x8, 0x8, 0x50, 1)], &[1, 0], &[INT_TI]);
    // mid: catch(const char*) then cleanup -> lp 0x1150 (does not match an int).
    let mid = lsda(&[(0x8, 0x8, 0x50, 1)], &[1, 1, 0, 0], &[CHAR_TI]);
    // low: cleanup only (action 0) -> lp 0x1250.
    let low = lsda(&[(0x8, 0x8, 0x50, 0)], &[], &[]);
    // The LSDA is the handler data itself, as g++ writes it.
    for (k, data) in [top, mid, low].into_iter().enumerate() {
        let begin = 0x1000 + 0x100 * k as u32;
        m.func(begin, begin + 0x100, uinfo(Some((GXX_HANDLER, data))));
    }
    m.func(0x1300, 0x1380, uinfo(None));
    let n = m.pdata.len() as u32;
    let bytes = m.finish();
    let imgs = images(&bytes, n);
    let r = ExceptionResolver::new(&imgs, DispatchOptions::default());
    let st = stack(&[B + 0x120c, B + 0x110c, B + 0x100c]);
    let mem = SliceMemory::new(STACK, &st);
    let f = fault(B + 0x1310, STATUS_GCC_THROW, vec![]);
    let d = r
        .dispatch(
            &f,
            &mem,
            &Decisions {
                thrown_type: Some(INT_TI),
                ..Decisions::default()
            },
        )
        .unwrap();
    assert_eq!(
        d.events,
        [
            Event::Cleanup {
                frame: 1,
                function: B + 0x1200,
                address: B + 0x1250
            },
            Event::Cleanup {
                frame: 2,
                function: B + 0x1100,
                address: B + 0x1150
            },
        ]
    );
    assert_eq!(
        d.outcome,
        Outcome::Catch {
            frame: 3,
            function: B + 0x1000,
            address: B + 0x1050,
            type_info: Some(INT_TI)
        }
    );
    // A char* is caught one frame lower; without a type, the first typed clause asks.
    let d = r
        .dispatch(
            &f,
            &mem,
            &Decisions {
                thrown_type: Some(CHAR_TI),
                ..Decisions::default()
            },
        )
        .unwrap();
    assert_eq!(d.events.len(), 1);
    assert!(matches!(d.outcome, Outcome::Catch { frame: 2, .. }));
    let d = r.dispatch(&f, &mem, &Decisions::default()).unwrap();
    assert!(matches!(d.outcome, Outcome::NeedsType { frame: 2, .. }));
    // The personality looks up ControlPc - 1: a return address just past a call site is
    // still in it; one byte further is not (and an uncovered pc means std::terminate).
    let st = stack(&[B + 0x1211, B + 0x110c, B + 0x100c]);
    let mem = SliceMemory::new(STACK, &st);
    let d = r.dispatch(&f, &mem, &Decisions::default()).unwrap();
    assert_eq!(d.outcome, Outcome::Terminate { frame: 1 });
    let st = stack(&[B + 0x1210, B + 0x110c, B + 0x100c]);
    let mem = SliceMemory::new(STACK, &st);
    let d = r
        .dispatch(
            &f,
            &mem,
            &Decisions {
                thrown_type: Some(INT_TI),
                ..Decisions::default()
            },
        )
        .unwrap();
    assert_eq!(d.events.len(), 2);
}

const FH3_HANDLER: u32 = 0x1f20;

fn words(m: &mut [u8], at: u32, vals: &[u32]) {
    for (i, v) in vals.iter().enumerate() {
        let o = at as usize + 4 * i;
        m[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }
}

/// top: try { Noisy (state 1); thrower() } catch (char *) / catch (int); thrower: Noisy.
fn fh3_image(eh_flags: u32) -> (Vec<u8>, u32) {
    let mut m = Img::new();
    m.func(
        0x1000,
        0x1100,
        uinfo(Some((FH3_HANDLER, 0x2900u32.to_le_bytes().to_vec()))),
    );
    m.func(
        0x1100,
        0x1200,
        uinfo(Some((FH3_HANDLER, 0x2800u32.to_le_bytes().to_vec()))),
    );
    let n = m.pdata.len() as u32;
    let mut b = m.finish();
    let m1 = u32::MAX; // -1
                       // thrower's FuncInfo: one state (a destructor), no try block.
    words(
        &mut b,
        0x2800,
        &[0x1993_0522, 1, 0x2840, 0, 0, 2, 0x2860, 0, 0, eh_flags],
    );
    words(&mut b, 0x2840, &[m1, 0x1180]);
    words(&mut b, 0x2860, &[0x1100, m1, 0x1110, 0]);
    // top's FuncInfo: state 0 = the try, state 1 = an object inside it.
    words(
        &mut b,
        0x2900,
        &[0x1993_0522, 2, 0x2940, 1, 0x2960, 3, 0x29c0, 0, 0, eh_flags],
    );
    words(&mut b, 0x2940, &[m1, 0, 0, 0x1090]);
    words(&mut b, 0x2960, &[0, 1, 2, 2, 0x2980]);
    words(
        &mut b,
        0x2980,
        &[0, 0x2a00, 0, 0x10a0, 0x40, 0, 0x2a40, 0, 0x10c0, 0x40],
    );
    words(&mut b, 0x29c0, &[0x1000, m1, 0x1010, 0, 0x1018, 1]);
    b[0x2a10..0x2a16].copy_from_slice(b".PEAD\0");
    b[0x2a50..0x2a53].copy_from_slice(b".H\0");
    // ThrowInfo of an int: its CatchableTypeArray names ".H".
    words(&mut b, 0x2b00, &[0, 0, 0, 0x2b20]);
    words(&mut b, 0x2b20, &[1, 0x2b40]);
    words(&mut b, 0x2b40, &[0, 0x2a40, 0, 0, 0, 4, 0]);
    (b, n)
}

#[test]
fn msvc_fh3_destructors_try_body_and_catch_by_throw_info() {
    let (bytes, n) = fh3_image(1);
    let img = PeImage::from_parts(&bytes, B, 0x3000, n * 12);
    let mut m = PeModule::from_image("fh3.exe", B, img);
    m.add_symbol(FH3_HANDLER, "__CxxFrameHandler3");
    let mut imgs = CodeImages::new();
    imgs.add(m);
    let r = ExceptionResolver::new(&imgs, DispatchOptions::default());
    let st = stack(&[B + 0x1020]);
    let mem = SliceMemory::new(STACK, &st);
    let throw = fault(
        B + 0x1150,
        xunwind::dispatch::EH_EXCEPTION_NUMBER,
        vec![0x1993_0520, 0x9000, B + 0x2b00, B],
    );
    let d = r.dispatch(&throw, &mem, &Decisions::default()).unwrap();
    assert_eq!(
        d.events,
        [
            Event::Cleanup {
                frame: 0,
                function: B + 0x1100,
                address: B + 0x1180
            },
            Event::Cleanup {
                frame: 1,
                function: B + 0x1000,
                address: B + 0x1090
            },
        ]
    );
    assert_eq!(
        d.outcome,
        Outcome::Catch {
            frame: 1,
            function: B + 0x1000,
            address: B + 0x10c0,
            type_info: Some(B + 0x2a40)
        }
    );
    // /EHs code does nothing for an access violation: no destructor, no catch.
    let av = fault(B + 0x1150, FAULT_CODE, vec![]);
    let d = r.dispatch(&av, &mem, &Decisions::default()).unwrap();
    assert!(d.events.is_empty());
    assert_eq!(
        d.outcome,
        Outcome::Unhandled {
            reason: "end of stack"
        }
    );
}

#[test]
fn wine8_scope_rules_run_the_enclosing_finally() {
    // middle's filter takes the exception; its __finally [0x1110, 0x1150) does not hold the
    // __except body (0x1180): Windows stops at the target __except scope, Wine 8 runs it.
    let (bytes, n) = seh_image();
    let imgs = images(&bytes, n);
    let st = stack(&[B + 0x1225, B + 0x1125, B + 0x1020]);
    let mem = SliceMemory::new(STACK, &st);
    let f = fault(B + 0x1310, FAULT_CODE, vec![]);
    let take = decide(&[(B + 0x1500, FilterResult::ExecuteHandler)]);
    let wine = DispatchOptions {
        scope_rules: xunwind::dispatch::ScopeRules::Wine8,
        ..DispatchOptions::default()
    };
    let d = ExceptionResolver::new(&imgs, wine)
        .dispatch(&f, &mem, &take)
        .unwrap();
    assert_eq!(
        d.events.last(),
        Some(&Event::Finally {
            frame: 2,
            function: B + 0x1100,
            scope: 1,
            address: B + 0x1600
        })
    );
    let d = ExceptionResolver::new(&imgs, DispatchOptions::default())
        .dispatch(&f, &mem, &take)
        .unwrap();
    assert!(!d
        .events
        .iter()
        .any(|e| matches!(e, Event::Finally { frame: 2, .. })));
}

#[test]
fn dynamic_tables_answer_only_where_no_image_table_does() {
    // An image with .pdata answers for its whole range (a pc without an entry is a leaf); an
    // image without an exception directory, or no image, leaves the pc to the dynamic tables.
    let (bytes, n) = seh_image();
    let with_pdata = PeImage::from_parts(&bytes, B, 0x3000, n * 12);
    let no_pdata_bytes = vec![0xccu8; 0x1000];
    let no_pdata = PeImage::from_parts(&no_pdata_bytes, 0x2_0000_0000, 0, 0);
    let code = vec![0u8; 0x1000];
    let mut imgs = CodeImages::new();
    imgs.add(PeModule::from_image("seh.exe", B, with_pdata));
    imgs.add(PeModule::from_image(
        "jit-host.dll",
        0x2_0000_0000,
        no_pdata,
    ));
    let entry = |begin: u32| RuntimeFunction {
        begin,
        end: begin + 0x10,
        unwind_data: 0x800,
    };
    // Tables over part of seh.exe (an unused range), over jit-host.dll, and over free memory.
    imgs.dynamic
        .add_function_table(vec![entry(0x1400)], B, &code);
    imgs.dynamic
        .add_function_table(vec![entry(0x100)], 0x2_0000_0000, &code);
    imgs.dynamic
        .add_function_table(vec![entry(0x100)], 0x3_0000_0000, &code);
    assert!(imgs.lookup_function_entry(B + 0x1405).is_none());
    assert_eq!(
        imgs.lookup_function_entry(B + 0x1205)
            .map(|f| (f.module, f.function.begin)),
        Some((Some(0), 0x1200))
    );
    let j = imgs.lookup_function_entry(0x2_0000_0105).unwrap();
    assert_eq!(
        (j.module, j.base, j.function.begin),
        (None, 0x2_0000_0000, 0x100)
    );
    let j = imgs.lookup_function_entry(0x3_0000_0105).unwrap();
    assert_eq!((j.module, j.base), (None, 0x3_0000_0000));
    assert!(imgs.lookup_function_entry(0x3_0000_0125).is_none());
}

#[test]
fn stack_limits_stop_the_search_as_windows_does() {
    let (bytes, n) = seh_image();
    let imgs = images(&bytes, n);
    let st = stack(&[B + 0x1225, B + 0x1125, B + 0x1020]);
    let mem = SliceMemory::new(STACK, &st);
    let f = fault(B + 0x1310, FAULT_CODE, vec![]);
    let decline = decide(&[(B + 0x1500, FilterResult::ContinueSearch)]);
    let with = |lo: u64, hi: u64| {
        let o = DispatchOptions {
            stack_limits: Some((lo, hi)),
            ..DispatchOptions::default()
        };
        ExceptionResolver::new(&imgs, o)
            .dispatch(&f, &mem, &decline)
            .unwrap()
    };
    // Limits holding every frame: the same answer as without.
    assert!(matches!(
        with(STACK, STACK + 0x400).outcome,
        Outcome::Except { frame: 3, .. }
    ));
    // main's frame (establisher STACK + 0x90) lies past the high limit: the caller's rsp leaves
    // the stack after frame 2, which ends the search before main's __except is seen.
    let d = with(STACK, STACK + 0x90);
    assert_eq!(d.frames.len(), 3);
    assert_eq!(
        d.outcome,
        Outcome::Unhandled {
            reason: "end of stack"
        }
    );
    // An establisher below the low limit: stack invalid.
    let d = with(STACK + 8, STACK + 0x400);
    assert!(d.frames.is_empty());
    assert!(matches!(d.outcome, Outcome::Unhandled { reason } if reason.contains("stack invalid")));
}
