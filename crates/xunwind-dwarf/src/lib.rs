//! ELF DWARF call-frame information: `.eh_frame` found through `.eh_frame_hdr`'s search table,
//! `.debug_frame`, evaluated with gimli, behind xunwind's `FrameWalker`.
#![deny(missing_docs)]
