//! MD5 of many files side by side.
//!
//! MD5 is a chain: each of the 64 steps of a block needs the result of the step
//! before, so one stream cannot go much faster than about five cycles a byte
//! (coreutils' `md5sum` and the `md-5` crate both hash about 600 MB/s per core). A
//! tree has thousands of files, though, and their digests are independent: here
//! sixteen of them advance together, one per *lane*, so that every step is a handful
//! of vector instructions working on sixteen streams at once. That is the
//! multi-buffer technique of storage and backup software, written for this crate.
//! Measured per core on x86-64: about 4× a single stream with the SSE2 every x86-64
//! has, about 7× with AVX2 (chosen at run time when the CPU has it).
//!
//! [`md5_files`] feeds the lanes from files: the largest files first, so that no
//! big file starts late and finishes alone, each lane reading its file in chunks
//! (memory stays at `LANES` chunks per thread, whatever the file sizes), and the
//! last few files of each thread finished one at a time, which is faster than
//! running sixteen lanes for two.
//!
//! Correctness is checked against the `md-5` crate in the tests below, for every
//! length around the block and padding boundaries and for lanes of mixed lengths.

use crate::progress::Counters;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many streams advance together.
pub(crate) const LANES: usize = 16;

/// Bytes each lane reads at a time: a whole number of blocks, large enough that
/// syscalls cost little, small enough that `LANES` of them per thread stay small.
const CHUNK: usize = 64 * 1024;

/// At most this many threads hash (more would only add memory: the disk, not the
/// cores, bounds a scan on a machine that has that many).
const MAX_THREADS: usize = 16;

const IV: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// The sine-derived constants of RFC 1321, one per step.
const K: [u32; 64] = [
    0xd76a_a478,
    0xe8c7_b756,
    0x2420_70db,
    0xc1bd_ceee,
    0xf57c_0faf,
    0x4787_c62a,
    0xa830_4613,
    0xfd46_9501,
    0x6980_98d8,
    0x8b44_f7af,
    0xffff_5bb1,
    0x895c_d7be,
    0x6b90_1122,
    0xfd98_7193,
    0xa679_438e,
    0x49b4_0821,
    0xf61e_2562,
    0xc040_b340,
    0x265e_5a51,
    0xe9b6_c7aa,
    0xd62f_105d,
    0x0244_1453,
    0xd8a1_e681,
    0xe7d3_fbc8,
    0x21e1_cde6,
    0xc337_07d6,
    0xf4d5_0d87,
    0x455a_14ed,
    0xa9e3_e905,
    0xfcef_a3f8,
    0x676f_02d9,
    0x8d2a_4c8a,
    0xfffa_3942,
    0x8771_f681,
    0x6d9d_6122,
    0xfde5_380c,
    0xa4be_ea44,
    0x4bde_cfa9,
    0xf6bb_4b60,
    0xbebf_bc70,
    0x289b_7ec6,
    0xeaa1_27fa,
    0xd4ef_3085,
    0x0488_1d05,
    0xd9d4_d039,
    0xe6db_99e5,
    0x1fa2_7cf8,
    0xc4ac_5665,
    0xf429_2244,
    0x432a_ff97,
    0xab94_23a7,
    0xfc93_a039,
    0x655b_59c3,
    0x8f0c_cc92,
    0xffef_f47d,
    0x8584_5dd1,
    0x6fa8_7e4f,
    0xfe2c_e6e0,
    0xa301_4314,
    0x4e08_11a1,
    0xf753_7e82,
    0xbd3a_f235,
    0x2ad7_d2bb,
    0xeb86_d391,
];

static ZERO_BLOCK: [u8; 64] = [0; 64];

/// `L` MD5 states stored word by word (`[a, b, c, d][lane]`), so that one step on
/// all lanes is one operation on each of four arrays, which the compiler turns into
/// vector instructions.
type State<const L: usize> = [[u32; L]; 4];

#[inline(always)]
fn f(b: u32, c: u32, d: u32) -> u32 {
    d ^ (b & (c ^ d))
}
#[inline(always)]
fn g(b: u32, c: u32, d: u32) -> u32 {
    c ^ (d & (b ^ c))
}
#[inline(always)]
fn h(b: u32, c: u32, d: u32) -> u32 {
    b ^ c ^ d
}
#[inline(always)]
fn i(b: u32, c: u32, d: u32) -> u32 {
    c ^ (b | !d)
}

/// One MD5 block on each lane (RFC 1321, section 3.4). Written once for any lane
/// count: `L = 1` is plain MD5, `L = LANES` is what the vector units run.
#[inline(always)]
fn compress<const L: usize>(st: &mut State<L>, blocks: &[&[u8; 64]; L]) {
    // The message words, transposed: m[word][lane].
    let mut m = [[0u32; L]; 16];
    for (l, block) in blocks.iter().enumerate() {
        for (w, bytes) in block.chunks_exact(4).enumerate() {
            m[w][l] = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
    }
    let [mut a, mut b, mut c, mut d] = *st;
    // a = b + ((a + fun(b, c, d) + m[word] + K[step]) <<< shift), on every lane.
    macro_rules! step {
        ($fun:ident, $a:ident, $b:ident, $c:ident, $d:ident, $word:expr, $shift:expr, $step:expr) => {
            for l in 0..L {
                // The function of the previous step's result is added last, so
                // that the other additions are off the chain from step to step.
                let x = $a[l]
                    .wrapping_add(m[$word][l].wrapping_add(K[$step]))
                    .wrapping_add($fun($b[l], $c[l], $d[l]));
                $a[l] = $b[l].wrapping_add(x.rotate_left($shift));
            }
        };
    }
    // Sixteen steps of one round: word index `first + stride * step (mod 16)`.
    macro_rules! round {
        ($fun:ident, $first:expr, $stride:expr, $base:expr, [$s0:expr, $s1:expr, $s2:expr, $s3:expr]) => {
            for q in 0..4 {
                let s = $base + 4 * q;
                step!($fun, a, b, c, d, ($first + $stride * s) % 16, $s0, s);
                step!(
                    $fun,
                    d,
                    a,
                    b,
                    c,
                    ($first + $stride * (s + 1)) % 16,
                    $s1,
                    s + 1
                );
                step!(
                    $fun,
                    c,
                    d,
                    a,
                    b,
                    ($first + $stride * (s + 2)) % 16,
                    $s2,
                    s + 2
                );
                step!(
                    $fun,
                    b,
                    c,
                    d,
                    a,
                    ($first + $stride * (s + 3)) % 16,
                    $s3,
                    s + 3
                );
            }
        };
    }
    round!(f, 0, 1, 0, [7, 12, 17, 22]);
    round!(g, 1, 5, 16, [5, 9, 14, 20]);
    round!(h, 5, 3, 32, [4, 11, 16, 23]);
    round!(i, 0, 7, 48, [6, 10, 15, 21]);
    for l in 0..L {
        st[0][l] = st[0][l].wrapping_add(a[l]);
        st[1][l] = st[1][l].wrapping_add(b[l]);
        st[2][l] = st[2][l].wrapping_add(c[l]);
        st[3][l] = st[3][l].wrapping_add(d[l]);
    }
}

/// Block `n` of a lane's input, or a block of zeros for a lane with nothing to do
/// (its state is thrown away when the lane is given its next file).
#[inline(always)]
fn block_at(input: &[u8], n: usize) -> &[u8; 64] {
    input
        .get(n * 64..n * 64 + 64)
        .and_then(|b| b.try_into().ok())
        .unwrap_or(&ZERO_BLOCK)
}

#[inline(always)]
fn compress_lanes_portable(st: &mut State<LANES>, inputs: &[&[u8]; LANES], blocks: usize) {
    for n in 0..blocks {
        let b: [&[u8; 64]; LANES] = std::array::from_fn(|l| block_at(inputs[l], n));
        compress(st, &b);
    }
}

/// The same code compiled for AVX2: twice as wide vectors as SSE2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn compress_lanes_avx2(st: &mut State<LANES>, inputs: &[&[u8]; LANES], blocks: usize) {
    compress_lanes_portable(st, inputs, blocks)
}

/// The sixteen lanes in one AVX-512 register each for `a`, `b`, `c` and `d`, written
/// with intrinsics: each step's three-input function is one `vpternlogd`, its rotation
/// one `vprold`, and the message words of the sixteen blocks are transposed in
/// registers (four rounds of unpacks and 128-bit shuffles) rather than word by word
/// through memory, which is what the compiled portable code spends most time on.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn compress_lanes_avx512(st: &mut State<LANES>, inputs: &[&[u8]; LANES], blocks: usize) {
    use std::arch::x86_64::*;
    // SAFETY (all loads and stores below): each pointer is to 64 readable or writable
    // bytes (a 64-byte block, or sixteen u32 of the state); unaligned access is used.
    let mut a = unsafe { _mm512_loadu_si512(st[0].as_ptr().cast()) };
    let mut b = unsafe { _mm512_loadu_si512(st[1].as_ptr().cast()) };
    let mut c = unsafe { _mm512_loadu_si512(st[2].as_ptr().cast()) };
    let mut d = unsafe { _mm512_loadu_si512(st[3].as_ptr().cast()) };
    for n in 0..blocks {
        // r[l]: the sixteen words of lane l's block; m[w]: word w of every lane.
        let r: [__m512i; LANES] = std::array::from_fn(|l| unsafe {
            _mm512_loadu_si512(block_at(inputs[l], n).as_ptr().cast())
        });
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        // u[4g + j]: rows 4g..4g+4, words j, j+4, j+8, j+12 (one per 128-bit part).
        let mut u = [_mm512_setzero_si512(); 16];
        for g in 0..4 {
            u[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
            u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
            u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
            u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
        }
        let mut m = [_mm512_setzero_si512(); 16];
        for j in 0..4 {
            let v0 = _mm512_shuffle_i32x4::<0x88>(u[j], u[4 + j]);
            let v1 = _mm512_shuffle_i32x4::<0xDD>(u[j], u[4 + j]);
            let v2 = _mm512_shuffle_i32x4::<0x88>(u[8 + j], u[12 + j]);
            let v3 = _mm512_shuffle_i32x4::<0xDD>(u[8 + j], u[12 + j]);
            m[j] = _mm512_shuffle_i32x4::<0x88>(v0, v2);
            m[j + 8] = _mm512_shuffle_i32x4::<0xDD>(v0, v2);
            m[j + 4] = _mm512_shuffle_i32x4::<0x88>(v1, v3);
            m[j + 12] = _mm512_shuffle_i32x4::<0xDD>(v1, v3);
        }
        let (a0, b0, c0, d0) = (a, b, c, d);
        // The ternary-logic tables of F, G, H and I with operands (b, c, d).
        macro_rules! step {
            ($imm:expr, $a:ident, $b:ident, $c:ident, $d:ident, $word:expr, $shift:expr, $step:expr) => {
                let mk = _mm512_add_epi32(m[$word], _mm512_set1_epi32(K[$step] as i32));
                let f = _mm512_ternarylogic_epi32::<$imm>($b, $c, $d);
                let x = _mm512_add_epi32(_mm512_add_epi32($a, mk), f);
                $a = _mm512_add_epi32($b, _mm512_rol_epi32::<$shift>(x));
            };
        }
        macro_rules! round {
            ($imm:expr, $first:expr, $stride:expr, $base:expr, [$s0:expr, $s1:expr, $s2:expr, $s3:expr]) => {
                for q in 0..4 {
                    let s = $base + 4 * q;
                    step!($imm, a, b, c, d, ($first + $stride * s) % 16, $s0, s);
                    step!(
                        $imm,
                        d,
                        a,
                        b,
                        c,
                        ($first + $stride * (s + 1)) % 16,
                        $s1,
                        s + 1
                    );
                    step!(
                        $imm,
                        c,
                        d,
                        a,
                        b,
                        ($first + $stride * (s + 2)) % 16,
                        $s2,
                        s + 2
                    );
                    step!(
                        $imm,
                        b,
                        c,
                        d,
                        a,
                        ($first + $stride * (s + 3)) % 16,
                        $s3,
                        s + 3
                    );
                }
            };
        }
        round!(0xCA, 0, 1, 0, [7, 12, 17, 22]);
        round!(0xE4, 1, 5, 16, [5, 9, 14, 20]);
        round!(0x96, 5, 3, 32, [4, 11, 16, 23]);
        round!(0x39, 0, 7, 48, [6, 10, 15, 21]);
        a = _mm512_add_epi32(a, a0);
        b = _mm512_add_epi32(b, b0);
        c = _mm512_add_epi32(c, c0);
        d = _mm512_add_epi32(d, d0);
    }
    unsafe {
        _mm512_storeu_si512(st[0].as_mut_ptr().cast(), a);
        _mm512_storeu_si512(st[1].as_mut_ptr().cast(), b);
        _mm512_storeu_si512(st[2].as_mut_ptr().cast(), c);
        _mm512_storeu_si512(st[3].as_mut_ptr().cast(), d);
    }
}

/// Whether the AVX-512 code runs: on a CPU that has it, unless
/// `KFD_AUDIT_MD5_LANES=avx2` asks for the AVX2 code (to compare the two).
#[cfg(target_arch = "x86_64")]
fn use_avx512() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::env::var_os("KFD_AUDIT_MD5_LANES").is_none_or(|v| v != "avx2")
    })
}

/// Advances every lane by `blocks` blocks of its input.
fn compress_lanes(st: &mut State<LANES>, inputs: &[&[u8]; LANES], blocks: usize) {
    #[cfg(target_arch = "x86_64")]
    if use_avx512() {
        // SAFETY: the function only needs AVX-512F, which this CPU has (checked).
        unsafe { compress_lanes_avx512(st, inputs, blocks) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the function only needs AVX2, which this CPU has (checked above).
        unsafe { compress_lanes_avx2(st, inputs, blocks) };
        return;
    }
    compress_lanes_portable(st, inputs, blocks)
}

/// Below this many busy lanes a thread finishes its files one by one: a single
/// stream runs at ~600 MB/s, a busy lane at 1/16 of the vector rate (~150 MB/s
/// with SSE2, ~275 MB/s with AVX2 on the machines measured).
fn scalar_below() -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        return 3;
    }
    5
}

/// The bytes after a message of `len` bytes whose last `rest.len()` (< 64) bytes
/// are `rest`: the final one or two blocks, padded as MD5 pads.
fn final_blocks(rest: &[u8], len: u64) -> ([u8; 128], usize) {
    let mut out = [0u8; 128];
    out[..rest.len()].copy_from_slice(rest);
    out[rest.len()] = 0x80;
    let total = if rest.len() < 56 { 64 } else { 128 };
    out[total - 8..total].copy_from_slice(&len.wrapping_mul(8).to_le_bytes());
    (out, total)
}

fn digest_of(st: &[[u32; LANES]; 4], lane: usize) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (w, chunk) in out.chunks_exact_mut(4).enumerate() {
        chunk.copy_from_slice(&st[w][lane].to_le_bytes());
    }
    out
}

/// One stream being hashed on a lane: its reader and the next chunk of its bytes.
struct Stream<R> {
    job: usize,
    reader: R,
    /// `CHUNK` bytes plus room for the padding blocks.
    buf: Box<[u8]>,
    /// `buf[pos..end]` is not hashed yet; it is always whole blocks.
    pos: usize,
    end: usize,
    /// Bytes read from the reader so far.
    len: u64,
    /// Reading stops once `len` exceeds this.
    limit: u64,
    /// `buf` ends with the padding: the stream is done once it is hashed.
    last: bool,
}

impl<R: Read> Stream<R> {
    fn start(
        job: usize,
        reader: R,
        buf: Box<[u8]>,
        limit: u64,
        counters: Option<&Counters>,
    ) -> io::Result<Self> {
        let mut s = Stream {
            job,
            reader,
            buf,
            pos: 0,
            end: 0,
            len: 0,
            limit,
            last: false,
        };
        s.fill(counters)?;
        Ok(s)
    }

    /// Reads the next chunk; at the end of the stream, pads it as MD5 pads. A
    /// stream longer than its limit ends one byte past it (its digest then means
    /// nothing; the length says why).
    fn fill(&mut self, counters: Option<&Counters>) -> io::Result<()> {
        let want = (self.limit.saturating_add(1) - self.len).min(CHUNK as u64) as usize;
        let mut n = 0;
        while n < want {
            match self.reader.read(&mut self.buf[n..want]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.len += n as u64;
        if let Some(c) = counters {
            c.add_bytes(n as u64);
        }
        self.pos = 0;
        if n == CHUNK && self.len <= self.limit {
            self.end = CHUNK;
        } else {
            let whole = n / 64 * 64;
            let (tail, t) = final_blocks(&self.buf[whole..n], self.len);
            self.buf[whole..whole + t].copy_from_slice(&tail[..t]);
            self.end = whole + t;
            self.last = true;
        }
        Ok(())
    }

    fn blocks(&self) -> usize {
        (self.end - self.pos) / 64
    }
}

/// The result for one stream: its MD5 and length, or why it could not be read.
pub(crate) type Md5Result = io::Result<([u8; 16], u64)>;

/// One thread's share: keeps its lanes busy with streams taken from `next` until
/// there are none left, and hands each result to `done`.
fn work<R: Read>(
    next: &dyn Fn() -> Option<usize>,
    open: &dyn Fn(usize) -> io::Result<R>,
    limit: u64,
    counters: Option<&Counters>,
    done: &mut dyn FnMut(usize, Md5Result),
) {
    let mut st: State<LANES> = [[0; LANES]; 4];
    let mut lanes: [Option<Stream<R>>; LANES] = std::array::from_fn(|_| None);
    let mut spare: Vec<Box<[u8]>> = Vec::new();
    let mut exhausted = false;
    loop {
        for (l, lane) in lanes.iter_mut().enumerate() {
            while lane.is_none() && !exhausted {
                let Some(job) = next() else {
                    exhausted = true;
                    break;
                };
                let buf = spare
                    .pop()
                    .unwrap_or_else(|| vec![0u8; CHUNK + 64].into_boxed_slice());
                match open(job).and_then(|r| Stream::start(job, r, buf, limit, counters)) {
                    Ok(s) => {
                        for (w, iv) in IV.iter().enumerate() {
                            st[w][l] = *iv;
                        }
                        *lane = Some(s);
                    }
                    Err(e) => {
                        if let Some(c) = counters {
                            c.file_done();
                        }
                        done(job, Err(e));
                    }
                }
            }
        }
        let busy = lanes.iter().filter(|s| s.is_some()).count();
        if busy == 0 {
            return;
        }
        if exhausted && busy < scalar_below() {
            break;
        }
        let n = lanes
            .iter()
            .flatten()
            .map(Stream::blocks)
            .min()
            .unwrap_or(0);
        let inputs: [&[u8]; LANES] =
            std::array::from_fn(|l| lanes[l].as_ref().map_or(&[][..], |s| &s.buf[s.pos..s.end]));
        compress_lanes(&mut st, &inputs, n);
        for (l, lane) in lanes.iter_mut().enumerate() {
            let Some(s) = lane else { continue };
            s.pos += n * 64;
            if s.pos < s.end {
                continue;
            }
            let result = if s.last {
                Some(Ok((digest_of(&st, l), s.len)))
            } else {
                s.fill(counters).err().map(Err)
            };
            if let Some(result) = result {
                let s = lane.take().expect("busy lane");
                if let Some(c) = counters {
                    c.file_done();
                }
                done(s.job, result);
                spare.push(s.buf);
            }
        }
    }
    // The last few streams of this thread, one at a time.
    for (l, lane) in lanes.iter_mut().enumerate() {
        let Some(mut s) = lane.take() else { continue };
        let mut one: State<1> = std::array::from_fn(|w| [st[w][l]]);
        let result = loop {
            for block in s.buf[s.pos..s.end].chunks_exact(64) {
                compress(&mut one, &[block.try_into().expect("64 bytes")]);
            }
            s.pos = s.end;
            if s.last {
                let mut d = [0u8; 16];
                for (w, chunk) in d.chunks_exact_mut(4).enumerate() {
                    chunk.copy_from_slice(&one[w][0].to_le_bytes());
                }
                break Ok((d, s.len));
            }
            if let Err(e) = s.fill(counters) {
                break Err(e);
            }
        };
        if let Some(c) = counters {
            c.file_done();
        }
        done(s.job, result);
    }
}

/// MD5 of `sizes.len()` streams, `open(i)` giving stream `i`, on all threads of the
/// current rayon pool. `sizes` are expected lengths, used only to start the
/// largest first. Each result is handed to `done(i, result)` as soon as it is known
/// (from any of the threads), so nothing the size of the tree is kept here. A
/// stream longer than `limit` bytes is read only to `limit + 1` and reported with
/// that length (and a meaningless digest).
pub(crate) fn md5_streams<R: Read>(
    sizes: &[u64],
    open: &(dyn Fn(usize) -> io::Result<R> + Sync),
    limit: u64,
    counters: Option<&Counters>,
    done: &(dyn Fn(usize, Md5Result) + Sync),
) {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sizes[i]));
    let cursor = AtomicUsize::new(0);
    let next = || order.get(cursor.fetch_add(1, Ordering::Relaxed)).copied();
    let threads = rayon::current_num_threads()
        .min(MAX_THREADS)
        .min(sizes.len().div_ceil(LANES))
        .max(1);
    rayon::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|_| work(&next, open, limit, counters, &mut |job, r| done(job, r)));
        }
    });
}

/// MD5 of files, `path(i)` naming file `i`, each opened with
/// [`crate::io::read::open_nofollow`] and read once from start to end (see
/// [`md5_streams`] for `limit`). `sizes` are the sizes the walk saw (to start the
/// largest first).
pub(crate) fn md5_files(
    path: &(dyn Fn(usize) -> PathBuf + Sync),
    sizes: &[u64],
    limit: u64,
    counters: Option<&Counters>,
    done: &(dyn Fn(usize, Md5Result) + Sync),
) {
    md5_streams(
        sizes,
        &|i| open_sequential(&path(i), sizes[i]),
        limit,
        counters,
        done,
    )
}

/// Opens a file to read it once, front to back. A file larger than the kernel's
/// default read-ahead (128 KiB) is announced as read sequentially, which doubles the
/// read-ahead on a cold cache; for smaller ones the call would only cost a syscall.
fn open_sequential(path: &std::path::Path, size: u64) -> io::Result<File> {
    let file = crate::io::read::open_nofollow(path)?;
    #[cfg(target_os = "linux")]
    if size > 128 * 1024 {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on a descriptor we own; its result is only advice.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest as _;
    use std::sync::Mutex;

    /// Every stream's result, in stream order.
    fn collect<R: Read>(
        sizes: &[u64],
        open: &(dyn Fn(usize) -> io::Result<R> + Sync),
        counters: Option<&Counters>,
    ) -> Vec<Md5Result> {
        let all: Mutex<Vec<Option<Md5Result>>> =
            Mutex::new(std::iter::repeat_with(|| None).take(sizes.len()).collect());
        md5_streams(sizes, open, u64::MAX, counters, &|i, r| {
            let mut all = all.lock().unwrap();
            assert!(all[i].is_none(), "stream {i} reported twice");
            all[i] = Some(r);
        });
        let all = all.into_inner().unwrap();
        all.into_iter()
            .enumerate()
            .map(|(i, r)| r.unwrap_or_else(|| panic!("stream {i} never reported")))
            .collect()
    }

    fn reference(data: &[u8]) -> [u8; 16] {
        md5::Md5::digest(data).into()
    }

    fn data(len: usize, seed: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i.wrapping_mul(31) ^ seed.wrapping_mul(131) ^ (i >> 7)) as u8)
            .collect()
    }

    #[test]
    fn one_lane_is_md5() {
        for len in [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000] {
            let d = data(len, len);
            let whole = len / 64 * 64;
            let mut st: State<1> = std::array::from_fn(|w| [IV[w]]);
            for block in d[..whole].chunks_exact(64) {
                compress(&mut st, &[block.try_into().unwrap()]);
            }
            let (tail, n) = final_blocks(&d[whole..], len as u64);
            for block in tail[..n].chunks_exact(64) {
                compress(&mut st, &[block.try_into().unwrap()]);
            }
            let got: Vec<u8> = (0..4).flat_map(|w| st[w][0].to_le_bytes()).collect();
            assert_eq!(got, reference(&d), "length {len}");
        }
        assert_eq!(
            hex::encode(reference(b"abc")),
            "900150983cd24fb0d6963f7d28e17f72"
        );
    }

    #[test]
    fn lanes_of_mixed_lengths() {
        // Every length around block, padding and chunk boundaries, more streams than
        // lanes so that lanes are refilled, and a few long ones finished alone.
        let mut lens: Vec<usize> = (0..200).collect();
        lens.extend([
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            CHUNK + 55,
            CHUNK + 56,
            3 * CHUNK + 7,
        ]);
        lens.extend([5 * CHUNK, 1, 0, 2 * CHUNK - 64]);
        let inputs: Vec<Vec<u8>> = lens.iter().enumerate().map(|(i, &n)| data(n, i)).collect();
        let sizes: Vec<u64> = lens.iter().map(|&n| n as u64).collect();
        let counters = Counters::default();
        let got = collect(&sizes, &|i| Ok(&inputs[i][..]), Some(&counters));
        for (i, r) in got.into_iter().enumerate() {
            let (d, n) = r.unwrap();
            assert_eq!(n, lens[i] as u64);
            assert_eq!(d, reference(&inputs[i]), "stream {i}, length {}", lens[i]);
        }
        assert_eq!(counters.files(), lens.len() as u64);
        assert_eq!(counters.bytes(), lens.iter().sum::<usize>() as u64);
    }

    #[test]
    fn portable_and_detected_code_agree() {
        // The tests above run the code this CPU selects (AVX2 on most x86-64); the
        // portable build runs on the others.
        let inputs: Vec<Vec<u8>> = (0..LANES).map(|l| data(64 * (3 + l % 4), l)).collect();
        let ins: [&[u8]; LANES] = std::array::from_fn(|l| &inputs[l][..]);
        let mut a: State<LANES> = std::array::from_fn(|w| [IV[w]; LANES]);
        let mut b = a;
        compress_lanes(&mut a, &ins, 3);
        compress_lanes_portable(&mut b, &ins, 3);
        assert_eq!(a, b);
        // Each vector build this CPU can run, on lanes of different lengths (a lane
        // past its input hashes zeros) and every word position of every lane distinct.
        #[cfg(target_arch = "x86_64")]
        {
            let inputs: Vec<Vec<u8>> = (0..LANES).map(|l| data(64 * (1 + l % 5), 7 + l)).collect();
            let ins: [&[u8]; LANES] = std::array::from_fn(|l| &inputs[l][..]);
            let start: State<LANES> =
                std::array::from_fn(|w| std::array::from_fn(|l| IV[w] ^ (l as u32) << 8));
            let mut want = start;
            compress_lanes_portable(&mut want, &ins, 5);
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut got = start;
                // SAFETY: this CPU has AVX2 (checked above).
                unsafe { compress_lanes_avx2(&mut got, &ins, 5) };
                assert_eq!(got, want, "AVX2");
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                let mut got = start;
                // SAFETY: this CPU has AVX-512F (checked above).
                unsafe { compress_lanes_avx512(&mut got, &ins, 5) };
                assert_eq!(got, want, "AVX-512");
            }
        }
    }

    #[test]
    fn streams_past_the_limit_stop_one_byte_after_it() {
        let inputs: Vec<Vec<u8>> = [10, 100, 101, 102, 5000, CHUNK + 3, 3 * CHUNK]
            .iter()
            .enumerate()
            .map(|(i, &n)| data(n, i))
            .collect();
        // Sizes as a stat saw them earlier: the files have grown since.
        let sizes = vec![1; inputs.len()];
        let all: Mutex<Vec<Option<Md5Result>>> =
            Mutex::new(std::iter::repeat_with(|| None).take(inputs.len()).collect());
        for limit in [100u64, CHUNK as u64] {
            md5_streams(&sizes, &|i| Ok(&inputs[i][..]), limit, None, &|i, r| {
                all.lock().unwrap()[i] = Some(r)
            });
            for (i, r) in all.lock().unwrap().iter_mut().enumerate() {
                let (d, n) = r.take().unwrap().unwrap();
                let len = inputs[i].len() as u64;
                if len <= limit {
                    assert_eq!((d, n), (reference(&inputs[i]), len), "stream {i}");
                } else {
                    assert_eq!(n, limit + 1, "stream {i}, limit {limit}");
                }
            }
        }
    }

    /// Reads at most a few bytes at a time, and fails where told.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
        fail_at: Option<usize>,
        pos: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.fail_at.is_some_and(|f| self.pos >= f) {
                return Err(io::Error::other("device error"));
            }
            let n = self.step.min(buf.len()).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn short_reads_and_errors() {
        let inputs: Vec<Vec<u8>> = (0..40)
            .map(|i| data(i * 997 + 3 * CHUNK * (i % 3), i))
            .collect();
        let sizes: Vec<u64> = inputs.iter().map(|d| d.len() as u64).collect();
        let got = collect(
            &sizes,
            &|i| {
                if i == 7 {
                    return Err(io::Error::other("cannot open"));
                }
                Ok(Trickle {
                    data: &inputs[i],
                    step: 1 + i * 37,
                    fail_at: (i % 10 == 3).then_some(inputs[i].len() / 2),
                    pos: 0,
                })
            },
            None,
        );
        for (i, r) in got.into_iter().enumerate() {
            match r {
                Ok((d, n)) => {
                    assert!(i != 7 && i % 10 != 3, "stream {i} should have failed");
                    assert_eq!((d, n), (reference(&inputs[i]), inputs[i].len() as u64));
                }
                Err(e) => {
                    assert!(i == 7 || i % 10 == 3, "stream {i}: {e}");
                }
            }
        }
    }

    #[test]
    fn files_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        let mut want = Vec::new();
        for i in 0..20 {
            let d = data(i * 5000, i);
            let p = dir.path().join(format!("f{i}"));
            std::fs::write(&p, &d).unwrap();
            paths.push(p);
            want.push(reference(&d));
        }
        paths.push(dir.path().join("absent"));
        let sizes = vec![0; paths.len()];
        let got = collect(&sizes, &|i| open_sequential(&paths[i], 1 << 20), None);
        for (i, w) in want.iter().enumerate() {
            assert_eq!(&got[i].as_ref().unwrap().0, w);
        }
        assert!(got[20].is_err());
    }
}
