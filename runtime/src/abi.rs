//! The module ABI: the C structures and constants shared by generated modules and every host
//! (this crate's loader, the generated C header and Rust bindings). `#[repr(C)]`, 64-bit targets.
//!
//! A module with prefix `p` exports exactly:
//!
//! ```c
//! int32_t p_run(const odc_context *ctx, const odc_tensor *inputs, uint32_t n_inputs,
//!               odc_tensor *outputs, uint32_t n_outputs, void *arena, uint64_t arena_size);
//! uint64_t p_arena_size(void);
//! const odc_module_desc *p_describe(void);
//! ```
//!
//! A module compiled from a graph with state (a decoder's KV cache) exports, instead of `p_run`,
//! one *stateful* entry point per step it was compiled for (`p_prefill`, `p_decode`), each with
//! `run`'s parameters followed by the caller's state buffer, its description, and the state size:
//!
//! ```c
//! int32_t p_prefill(const odc_context *ctx, const odc_tensor *inputs, uint32_t n_inputs,
//!                   odc_tensor *outputs, uint32_t n_outputs, void *arena, uint64_t arena_size,
//!                   void *state, uint64_t state_size);          /* and p_decode alike */
//! const odc_module_desc *p_prefill_describe(void);          /* its tensors, its arena */
//! uint64_t p_state_size(void);                              /* 64-byte aligned, zeroed to reset */
//! ```
//!
//! `p_arena_size` is then the largest arena of the entry points, and `p_describe` describes the
//! module (weights) with no tensors. The module has no undefined symbols. The only host code it ever calls is the optional
//! `parallel_for` function pointer passed in the context.

use core::ffi::{c_char, c_void};

/// Bumped on any incompatible change of the structures or symbols below.
pub const ABI_VERSION: u32 = 1;
/// `odc_module_desc::magic`: the bytes "ODCm".
pub const MAGIC: u32 = u32::from_le_bytes(*b"ODCm");
/// Required alignment of the arena.
pub const ARENA_ALIGN: u64 = 64;

/// A kernel: runs iterations `lo..hi` of its outermost loop over the buffers in `args`.
pub type KernelFn = unsafe extern "C" fn(args: *const *mut u8, lo: i64, hi: i64) -> i32;

/// Host-provided parallel loop: run `kernel(args, lo, hi)` over sub-ranges covering `0..n`
/// (concurrently, in any split), return 0 or the first non-zero status.
pub type ParallelForFn = unsafe extern "C" fn(user: *mut c_void, kernel: KernelFn, args: *const *mut u8, n: i64) -> i32;

/// A tensor passed to `run`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OdcTensor {
    pub data: *mut c_void,
    /// `rank` extents.
    pub shape: *const i64,
    /// Bytes available at `data`.
    pub size_bytes: u64,
    pub rank: u32,
    /// ONNX `TensorProto.DataType` code.
    pub dtype: u32,
}

/// Per-call context (may be NULL: single-threaded, embedded weights).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OdcContext {
    pub abi_version: u32,
    pub num_threads: u32,
    /// Base of the external weights file's contents, when the module has one.
    pub weights: *const c_void,
    pub parallel_for: Option<ParallelForFn>,
    pub parallel_user: *mut c_void,
}

/// Static description of an input or output.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OdcTensorDesc {
    pub name: *const c_char,
    pub shape: *const i64,
    pub rank: u32,
    pub dtype: u32,
}

/// What `p_describe()` returns.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OdcModuleDesc {
    pub magic: u32,
    pub abi_version: u32,
    pub name: *const c_char,
    pub inputs: *const OdcTensorDesc,
    pub outputs: *const OdcTensorDesc,
    pub num_inputs: u32,
    pub num_outputs: u32,
    pub arena_size: u64,
    pub arena_align: u64,
    /// Size of the external weights file (0 when weights are embedded).
    pub weights_size: u64,
    /// File name of the external weights (NULL when embedded).
    pub weights_file: *const c_char,
    /// Fingerprint of the external weights (see [`fingerprint`]).
    pub weights_fingerprint: u64,
}

/// One element type of the ABI: its code (the ONNX `TensorProto.DataType` numbering), the name
/// odc prints for it, and its storage width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DTypeCode {
    pub code: u32,
    pub name: &'static str,
    /// Bits per element; sub-byte types are packed, low bits first.
    pub bits: u32,
}

const fn dt(code: u32, name: &'static str, bits: u32) -> DTypeCode {
    DTypeCode { code, name, bits }
}

/// Every element type a tensor crossing the ABI can have: the one table of dtype codes (the
/// compiler's `DType`, the loader, the generated headers and the ONNX importer all read it).
pub const DTYPE_CODES: [DTypeCode; 23] = [
    dt(1, "f32", 32),
    dt(2, "u8", 8),
    dt(3, "i8", 8),
    dt(4, "u16", 16),
    dt(5, "i16", 16),
    dt(6, "i32", 32),
    dt(7, "i64", 64),
    dt(9, "bool", 8),
    dt(10, "f16", 16),
    dt(11, "f64", 64),
    dt(12, "u32", 32),
    dt(13, "u64", 64),
    dt(16, "bf16", 16),
    dt(17, "f8e4m3fn", 8),
    dt(18, "f8e4m3fnuz", 8),
    dt(19, "f8e5m2", 8),
    dt(20, "f8e5m2fnuz", 8),
    dt(21, "u4", 4),
    dt(22, "i4", 4),
    dt(23, "f4e2m1", 4),
    dt(24, "f8e8m0", 8),
    dt(25, "u2", 2),
    dt(26, "i2", 2),
];

/// The table entry of an ABI dtype code.
pub fn dtype_code(code: u32) -> Option<&'static DTypeCode> {
    DTYPE_CODES.iter().find(|d| d.code == code)
}

/// The table entry of a dtype name as odc prints it (`"f32"`, `"bf16"`, ...).
pub fn dtype_named(name: &str) -> Option<&'static DTypeCode> {
    DTYPE_CODES.iter().find(|d| d.name == name)
}

/// Status codes returned by `run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    Ok = 0,
    /// A data-dependent index (Gather, Scatter) was out of range.
    IndexOutOfRange = 1,
    NullPointer = 2,
    WrongCount = 3,
    WrongDtype = 4,
    WrongShape = 5,
    BufferTooSmall = 6,
    ArenaTooSmall = 7,
    AbiMismatch = 8,
    MissingWeights = 9,
    /// A stateful entry point's state buffer is NULL, too small or misaligned.
    StateTooSmall = 10,
}

impl Status {
    pub fn from_code(c: i32) -> Option<Status> {
        use Status::*;
        Some(match c {
            0 => Ok,
            1 => IndexOutOfRange,
            2 => NullPointer,
            3 => WrongCount,
            4 => WrongDtype,
            5 => WrongShape,
            6 => BufferTooSmall,
            7 => ArenaTooSmall,
            8 => AbiMismatch,
            9 => MissingWeights,
            10 => StateTooSmall,
            _ => return None,
        })
    }

    pub fn message(self) -> &'static str {
        use Status::*;
        match self {
            Ok => "ok",
            IndexOutOfRange => "an index input was out of range",
            NullPointer => "a required pointer was NULL",
            WrongCount => "wrong number of inputs or outputs",
            WrongDtype => "a tensor has the wrong element type",
            WrongShape => "a tensor has the wrong shape",
            BufferTooSmall => "a tensor buffer is smaller than its shape needs",
            ArenaTooSmall => "the arena is too small or not 64-byte aligned",
            AbiMismatch => "the context was built for a different ABI version",
            MissingWeights => "the module needs its external weights and the context has none",
            StateTooSmall => "the state buffer is too small or not 64-byte aligned",
        }
    }
}

/// Bytes at each end of a weights blob that [`fingerprint`] reads.
pub const FINGERPRINT_SPAN: usize = 1 << 20;

/// Fingerprint of a weights blob: FNV-1a over its length and its first and last MiB. Detects a
/// wrong or truncated file without hashing hundreds of megabytes at load time.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let (head, tail) = fingerprint_spans(bytes.len());
    fingerprint_parts(bytes.len(), &bytes[head], &bytes[tail])
}

/// The byte ranges [`fingerprint`] reads of a `len`-byte blob: its first MiB and the rest of
/// its last MiB.
pub fn fingerprint_spans(len: usize) -> (core::ops::Range<usize>, core::ops::Range<usize>) {
    let head = 0..len.min(FINGERPRINT_SPAN);
    let tail = len.saturating_sub(FINGERPRINT_SPAN).max(head.end)..len;
    (head, tail)
}

/// [`fingerprint`] of a blob of `len` bytes given its first and last (non-overlapping) MiB.
pub fn fingerprint_parts(len: usize, head: &[u8], tail: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    for b in (len as u64).to_le_bytes() {
        eat(b);
    }
    head.iter().chain(tail).for_each(|&b| eat(b));
    h
}

// Layout checks: generated code addresses these fields by offset.
const _: () = {
    assert!(core::mem::size_of::<OdcTensor>() == 32);
    assert!(core::mem::size_of::<OdcContext>() == 32);
    assert!(core::mem::size_of::<OdcTensorDesc>() == 24);
    assert!(core::mem::size_of::<OdcModuleDesc>() == 80);
};

const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(OdcTensor, data) == offsets::TENSOR_DATA as usize);
    assert!(offset_of!(OdcTensor, shape) == offsets::TENSOR_SHAPE as usize);
    assert!(offset_of!(OdcTensor, size_bytes) == offsets::TENSOR_SIZE_BYTES as usize);
    assert!(offset_of!(OdcTensor, rank) == offsets::TENSOR_RANK as usize);
    assert!(offset_of!(OdcTensor, dtype) == offsets::TENSOR_DTYPE as usize);
    assert!(offset_of!(OdcContext, abi_version) == offsets::CTX_ABI_VERSION as usize);
    assert!(offset_of!(OdcContext, weights) == offsets::CTX_WEIGHTS as usize);
    assert!(offset_of!(OdcContext, parallel_for) == offsets::CTX_PARALLEL_FOR as usize);
    assert!(offset_of!(OdcContext, parallel_user) == offsets::CTX_PARALLEL_USER as usize);
    assert!(offset_of!(OdcModuleDesc, weights_file) == 64);
};

/// Field offsets, for code generators.
pub mod offsets {
    pub const TENSOR_SIZE: i32 = 32;
    pub const TENSOR_DATA: i32 = 0;
    pub const TENSOR_SHAPE: i32 = 8;
    pub const TENSOR_SIZE_BYTES: i32 = 16;
    pub const TENSOR_RANK: i32 = 24;
    pub const TENSOR_DTYPE: i32 = 28;
    pub const CTX_ABI_VERSION: i32 = 0;
    pub const CTX_WEIGHTS: i32 = 8;
    pub const CTX_PARALLEL_FOR: i32 = 16;
    pub const CTX_PARALLEL_USER: i32 = 24;
}
