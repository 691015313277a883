//! Convolutions as shifted matrix products: forward, input gradient and weight gradient of a 2-D
//! convolution (any kernel size, stride and symmetric padding; unit dilation, one group) on plain
//! `f32` slices, with faer's matrix product (run-time dispatched AVX-512 / AVX2 kernels) doing
//! the arithmetic. No im2col, no col2im.
//!
//! **The idea.** Pad the image and split it into its stride phases (s_h·s_w sub-images
//! P_{r,q}[u, v] = x_pad[s_h·u + r, s_w·v + q]; one phase at stride 1). Output pixel (ho, wo) reads
//! x_pad[s_h·ho + i, s_w·wo + j] = P_{i mod s_h, j mod s_w}[ho + ⌊i/s_h⌋, wo + ⌊j/s_w⌋], so on the
//! phase's row-major plane every tap (i, j) reads the *same* run of pixels shifted by one offset,
//! provided the output is computed on a "wide" grid as wide as the phase (the extra columns are
//! computed and dropped). Each tap is then one matrix product
//!
//! ```text
//! Y_wide[m, o] += Σ_c P[c, m + offset(i, j)] · W[o, c, i, j]      (m over the wide grid)
//! ```
//!
//! on a strided view of the same buffer. The batch is folded into m (images one after another,
//! the garbage rows between them dropped too), so a chunk of images is k_h·k_w large products.
//! The input gradient is the same products transposed and accumulated into the phase buffer
//! (dP[c, m + offset] += Σ_o dY_wide[m, o] · W[o, c, i, j], the wide grid's extra columns held at
//! zero), then un-split; the weight gradient is dW[o, c, i, j] = Σ_m dY_wide[m, o] · P[c, m +
//! offset]: products whose long dimension is the inner one. 1×1 convolutions at unit stride
//! without padding over images of 512+ pixels read and write the NCHW tensors in place, one
//! product per image. At unit stride the buffer is compact ([`Layout`]): padding rows and columns
//! are shared between neighbours, so the wide grid wastes (h + p)(w + p)/hw, not (h + 2p)(w + 2p)/hw.
//!
//! **Cache.** The wide grid runs in row blocks ([`row_blocks`]) that go through all their taps
//! before the next block starts, so the output block and its input rows stay in the core's cache
//! instead of streaming through memory once per tap; the forward output is copied out of the
//! block while it is there. Each thread gathers at most [`PASS_BYTES`] of padded input at a time,
//! and temporaries come from a per-thread pool.
//!
//! Work is split across the rayon pool in one contiguous chunk of images per thread (a chunk's
//! products run on one core); with fewer images than threads the products themselves are split.
//! [`Algorithm::Winograd`] (F(2×2, 3×3)) is here for comparison (`bench --mode conv`); it is not
//! the default ([`Geometry::algorithm`]).

use super::flex::vectorized;
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

thread_local! {
    /// Buffers of finished calls on this thread, reused by [`scratch`]: each convolution needs a
    /// few activation-sized temporaries, and fresh ones cost page faults every call.
    static POOL: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer from this thread's pool (empty when the pool is).
fn pooled() -> Vec<f32> {
    POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default()
}

/// A zeroed buffer of `len` values, from this thread's pool where it has one.
fn scratch(len: usize) -> Vec<f32> {
    let mut v = pooled();
    v.clear();
    v.resize(len, 0.0);
    v
}

/// A buffer of `len` values for the caller to overwrite in full (its contents are left from an
/// earlier call), from this thread's pool where it has one.
fn scratch_overwritten(len: usize) -> Vec<f32> {
    let mut v = pooled();
    if v.len() >= len {
        v.truncate(len);
    } else {
        v.resize(len, 0.0);
    }
    v
}

/// Returns a buffer from [`scratch`] to this thread's pool (which keeps at most four).
fn recycle(v: Vec<f32>) {
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        if pool.len() < 4 {
            pool.push(v);
        }
    });
}

/// The shape of one convolution: input `[batch, cin, h, w]`, weight `[cout, cin, kh, kw]`,
/// stride and symmetric zero padding per axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub batch: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

/// Sizes derived from a [`Geometry`]: the output, the planes of the (phase) buffer and the wide
/// grid. At unit stride the buffer is *compact*: images are stacked with `padding[0]` zero rows
/// between them and rows are `w + padding[1]` long, so that one run of zeros is the right padding
/// of a row and the left padding of the next (and `padding[1]` leading zeros the left padding of
/// the first): element (row, col) of the stack sits at `lead + row·wph + col`. At larger strides
/// each image has its own zero-padded plane per phase.
#[derive(Clone, Copy, Debug)]
struct Layout {
    ho: usize,
    wo: usize,
    /// Rows per image in the buffer and the wide grid (of one phase plane at stride > 1).
    hph: usize,
    /// Length of a row of the buffer (and of the wide grid).
    wph: usize,
    /// Elements per image in the buffer (and in the wide grid).
    plane: usize,
    phases: usize,
    /// Wide-grid rows of one image: (ho − 1)·wph + wo.
    wide: usize,
    /// Unit stride: the compact layout.
    compact: bool,
}

impl Layout {
    /// Elements of one channel of a chunk of `n` images in the buffer (each phase).
    fn channel(&self, g: &Geometry, n: usize) -> usize {
        if self.compact {
            // Leading zeros, n images with their top padding, the bottom padding, and one row of
            // slack for the last wide rows' reads.
            g.padding[1] + (n * (g.h + g.padding[0]) + g.padding[0] + 1) * self.wph
        } else {
            n * self.plane
        }
    }

    /// Where data row `y` of image `img`, channel `c` (stride 1) starts in a compact buffer.
    fn row_start(&self, g: &Geometry, channel: usize, c: usize, img: usize, y: usize) -> usize {
        c * channel + g.padding[1] + (img * (g.h + g.padding[0]) + g.padding[0] + y) * self.wph
    }
}

impl Geometry {
    /// `None` where the kernel does not apply (an empty axis, or a kernel larger than the padded
    /// input).
    pub fn new(
        x: [usize; 4],
        weight: [usize; 4],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Option<Self> {
        let [batch, cin, h, w] = x;
        let [cout, wc, kh, kw] = weight;
        let g = Self {
            batch,
            cin,
            h,
            w,
            cout,
            kh,
            kw,
            stride,
            padding,
        };
        let ok = wc == cin
            && [batch, cin, h, w, cout, kh, kw, stride[0], stride[1]]
                .iter()
                .all(|&n| n > 0)
            && h + 2 * padding[0] >= kh
            && w + 2 * padding[1] >= kw;
        ok.then_some(g)
    }

    /// Output `[batch, cout, ho, wo]`.
    pub fn output(&self) -> [usize; 4] {
        let l = self.layout();
        [self.batch, self.cout, l.ho, l.wo]
    }

    /// A per-pixel matrix product over images large enough to be one product each, read and
    /// written in place (smaller ones are stacked like any other convolution: the copy costs
    /// less than many short products).
    fn pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.stride == [1, 1]
            && self.padding == [0, 0]
            && self.h * self.w >= POINTWISE_MIN_PIXELS
    }

    fn taps(&self) -> usize {
        self.kh * self.kw
    }

    fn layout(&self) -> Layout {
        let [sh, sw] = self.stride;
        let [ph, pw] = self.padding;
        let (hp, wp) = (self.h + 2 * ph, self.w + 2 * pw);
        let (ho, wo) = ((hp - self.kh) / sh + 1, (wp - self.kw) / sw + 1);
        let compact = self.stride == [1, 1];
        let (hph, wph) = if compact {
            (self.h + ph, self.w + pw)
        } else {
            (hp.div_ceil(sh), wp.div_ceil(sw))
        };
        Layout {
            ho,
            wo,
            hph,
            wph,
            plane: hph * wph,
            phases: sh * sw,
            wide: (ho - 1) * wph + wo,
            compact,
        }
    }

    /// Images gathered (and products run) at once inside a thread's chunk: as many as keep the
    /// padded buffer within [`PASS_BYTES`] (at least one). The row blocks make the products no
    /// faster for more, and a smaller buffer stays in cache and adds less to peak memory.
    fn images_per_pass(&self, l: &Layout) -> usize {
        let per_image = self.cin * l.phases * l.plane * size_of::<f32>();
        (PASS_BYTES / per_image.max(1)).max(1)
    }

    /// Where tap (i, j) starts reading inside a chunk's buffer of `n` images: output pixel m of
    /// the wide grid reads element `tap_start + m` of each channel.
    fn tap_start(&self, l: &Layout, tap: usize, n: usize) -> usize {
        let [sh, sw] = self.stride;
        let (i, j) = (tap / self.kw, tap % self.kw);
        if l.compact {
            return i * l.wph + j;
        }
        let phase = (i % sh) * sw + j % sw;
        phase * self.cin * l.channel(self, n) + (i / sh) * l.wph + j / sw
    }

    /// The contiguous chunks of images, one per thread, and how each chunk's products run.
    fn chunks(&self) -> (Vec<std::ops::Range<usize>>, Par) {
        let threads = rayon::current_num_threads().max(1);
        let n = self.batch.min(threads);
        let par = if n < threads {
            Par::rayon(threads)
        } else {
            Par::Seq
        };
        let ranges = (0..n)
            .map(|k| self.batch * k / n..self.batch * (k + 1) / n)
            .collect();
        (ranges, par)
    }
}

/// The wide grid's `rows` in blocks that run all their taps before the next block starts, so that
/// a block's output (and its rows of the input) stay in the core's cache across the taps instead
/// of streaming through memory once per tap: about [`BLOCK_BYTES`] of both, in multiples of the
/// GEMM's 48-row tiles.
fn row_blocks(rows: usize, c: usize, o: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let len = (BLOCK_BYTES / 4 / (c + o)).max(96) / 48 * 48;
    (0..rows.div_ceil(len)).map(move |b| b * len..((b + 1) * len).min(rows))
}

/// The budget of the padded input buffer of one pass ([`Geometry::images_per_pass`]).
const PASS_BYTES: usize = 2 << 20;

/// The cache budget of one block of [`row_blocks`].
const BLOCK_BYTES: usize = 256 << 10;

/// The weight `[cout, cin, kh, kw]` as one matrix per tap: `[tap][cout][cin]` (`transpose` false:
/// each tap a column-major `[cin, cout]`) or `[tap][cin][cout]` (true: column-major `[cout, cin]`).
fn tap_matrices(g: &Geometry, weight: &[f32], transpose: bool) -> Vec<f32> {
    let (o, c, taps) = (g.cout, g.cin, g.taps());
    // Written in order, read with a stride of `taps`.
    let mut out = Vec::with_capacity(weight.len());
    for t in 0..taps {
        if transpose {
            for ci in 0..c {
                out.extend((0..o).map(|oi| weight[(oi * c + ci) * taps + t]));
            }
        } else {
            for oi in 0..o {
                out.extend((0..c).map(|ci| weight[(oi * c + ci) * taps + t]));
            }
        }
    }
    out
}

/// The `n` images of `x` (NCHW) padded (and split into phases at stride > 1): `[phase][cin]`
/// channels of [`Layout::channel`] elements.
fn gather_phases(g: &Geometry, l: &Layout, x: &[f32], n: usize) -> Vec<f32> {
    let [sh, sw] = g.stride;
    let [ph, pw] = g.padding;
    let (c, h, w) = (g.cin, g.h, g.w);
    let channel = l.channel(g, n);
    let mut out = scratch(l.phases * c * channel);
    if l.compact {
        for ci in 0..c {
            for img in 0..n {
                let src = (img * c + ci) * h * w;
                for y in 0..h {
                    let at = l.row_start(g, channel, ci, img, y);
                    out[at..at + w].copy_from_slice(&x[src + y * w..src + (y + 1) * w]);
                }
            }
        }
        return out;
    }
    for r in 0..sh {
        for q in 0..sw {
            let phase = r * sw + q;
            for ci in 0..c {
                for img in 0..n {
                    let dst = (phase * c + ci) * channel + img * l.plane;
                    let src = (img * c + ci) * h * w;
                    for u in 0..l.hph {
                        // Row of the padded image, then of the input.
                        let Some(y) = (sh * u + r).checked_sub(ph).filter(|&y| y < h) else {
                            continue;
                        };
                        let row = &x[src + y * w..src + (y + 1) * w];
                        let out_row = &mut out[dst + u * l.wph..dst + (u + 1) * l.wph];
                        for (v, o) in out_row.iter_mut().enumerate() {
                            if let Some(xi) = (sw * v + q).checked_sub(pw).filter(|&xi| xi < w) {
                                *o = row[xi];
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// The inverse of [`gather_phases`] for gradients: the buffer's values at input pixels, written
/// into `dx` (NCHW, `n` images); padding is dropped.
fn scatter_phases(g: &Geometry, l: &Layout, dph: &[f32], n: usize, dx: &mut [f32]) {
    let [sh, sw] = g.stride;
    let [ph, pw] = g.padding;
    let (c, h, w) = (g.cin, g.h, g.w);
    let channel = l.channel(g, n);
    for img in 0..n {
        for ci in 0..c {
            let dst = (img * c + ci) * h * w;
            for y in 0..h {
                let out_row = &mut dx[dst + y * w..dst + (y + 1) * w];
                if l.compact {
                    let at = l.row_start(g, channel, ci, img, y);
                    out_row.copy_from_slice(&dph[at..at + w]);
                    continue;
                }
                let (u, r) = ((y + ph) / sh, (y + ph) % sh);
                for (xi, o) in out_row.iter_mut().enumerate() {
                    let (v, q) = ((xi + pw) / sw, (xi + pw) % sw);
                    let phase = r * sw + q;
                    *o = dph[(phase * c + ci) * channel + img * l.plane + u * l.wph + v];
                }
            }
        }
    }
}

/// `dy` (NCHW, `n` images) on the wide grid of the chunk: column-major `[rows, cout]` with rows
/// = (n − 1)·plane + wide, zero off the output pixels.
fn widen(g: &Geometry, l: &Layout, dy: &[f32], n: usize) -> Vec<f32> {
    let rows = (n - 1) * l.plane + l.wide;
    let mut out = scratch(rows * g.cout);
    for o in 0..g.cout {
        for img in 0..n {
            let src = (img * g.cout + o) * l.ho * l.wo;
            let dst = o * rows + img * l.plane;
            for y in 0..l.ho {
                out[dst + y * l.wph..dst + y * l.wph + l.wo]
                    .copy_from_slice(&dy[src + y * l.wo..src + (y + 1) * l.wo]);
            }
        }
    }
    out
}

/// `y = conv(x, weight) + bias` for x `[batch, cin, h, w]` (NCHW, contiguous), returning
/// `[batch, cout, ho, wo]` ([`Geometry::output`]).
pub fn forward(g: &Geometry, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    forward_by(g, g.algorithm(), x, weight, bias)
}

/// [`forward`] by the given algorithm (Winograd only where [`Geometry::winograd_fits`]).
pub fn forward_by(
    g: &Geometry,
    algorithm: Algorithm,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    if algorithm == Algorithm::Winograd {
        assert!(g.winograd_fits(), "Winograd F(2×2, 3×3) on {g:?}");
        return winograd(g, x, weight, bias);
    }
    let l = g.layout();
    let (c, o) = (g.cin, g.cout);
    let (in_img, out_img) = (c * g.h * g.w, o * l.ho * l.wo);
    let wt = tap_matrices(g, weight, false);
    let tap = |t: usize| MatRef::from_column_major_slice(&wt[t * o * c..(t + 1) * o * c], c, o);
    let mut out = vec![0.0f32; g.batch * out_img];
    let (chunks, par) = g.chunks();
    let pieces = split_images(x, &mut out, &chunks, in_img, out_img);
    let per = g.images_per_pass(&l);
    pieces.into_par_iter().for_each(|(x_all, y_all)| {
        let images = x_all.len() / in_img;
        for s in (0..images).step_by(per) {
            let e = (s + per).min(images);
            let (x, y) = (
                &x_all[s * in_img..e * in_img],
                &mut y_all[s * out_img..e * out_img],
            );
            let n = e - s;
            if g.pointwise() {
                for (xi, yi) in x.chunks_exact(in_img).zip(y.chunks_exact_mut(out_img)) {
                    let hw = g.h * g.w;
                    let lhs = MatRef::from_column_major_slice(xi, hw, c);
                    matmul(
                        MatMut::from_column_major_slice_mut(yi, hw, o),
                        Accum::Replace,
                        lhs,
                        tap(0),
                        1.0f32,
                        par,
                    );
                }
            } else {
                let phases = gather_phases(g, &l, x, n);
                let rows = (n - 1) * l.plane + l.wide;
                let stride = l.channel(g, n);
                // One block of the wide grid at a time, copied out (with the bias) while in cache.
                let blocks: Vec<_> = row_blocks(rows, c, o).collect();
                let mut block = scratch_overwritten(blocks[0].len() * o);
                for blk in blocks {
                    let len = blk.len();
                    for t in 0..g.taps() {
                        let start = g.tap_start(&l, t, n) + blk.start;
                        let lhs = MatRef::from_column_major_slice_with_stride(
                            &phases[start..],
                            len,
                            c,
                            stride,
                        );
                        let acc = if t == 0 { Accum::Replace } else { Accum::Add };
                        let dst =
                            MatMut::from_column_major_slice_mut(&mut block[..len * o], len, o);
                        matmul(dst, acc, lhs, tap(t), 1.0f32, par);
                    }
                    vectorized(
                        #[inline(always)]
                        || {
                            // Grid rows r overlapping the block: image r / hph, output row r % hph.
                            for r in blk.start / l.wph..blk.end.div_ceil(l.wph) {
                                let (img, yy) = (r / l.hph, r % l.hph);
                                let row0 = r * l.wph;
                                let x0 = blk.start.saturating_sub(row0);
                                let x1 = (blk.end - row0).min(l.wo);
                                if yy >= l.ho || x0 >= x1 {
                                    continue;
                                }
                                for oi in 0..o {
                                    let b = bias.map_or(0.0, |b| b[oi]);
                                    let src = &block[oi * len + row0 + x0 - blk.start..][..x1 - x0];
                                    let at = ((img * o + oi) * l.ho + yy) * l.wo + x0;
                                    for (d, &v) in y[at..at + x1 - x0].iter_mut().zip(src) {
                                        *d = v + b;
                                    }
                                }
                            }
                        },
                    );
                }
                recycle(phases);
                recycle(block);
                continue;
            }
            if let Some(bias) = bias {
                vectorized(
                    #[inline(always)]
                    || {
                        for yi in y.chunks_exact_mut(out_img) {
                            for (map, &b) in yi.chunks_exact_mut(l.ho * l.wo).zip(bias) {
                                map.iter_mut().for_each(|v| *v += b);
                            }
                        }
                    },
                );
            }
        }
    });
    out
}

/// The gradients of [`forward`] for the upstream gradient `dy` `[batch, cout, ho, wo]`: `dx`
/// `[batch, cin, h, w]` when `want_dx`, `dW` `[cout, cin, kh, kw]` when `want_dw`.
pub fn backward(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    want_dx: bool,
    want_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    backward_by(g, g.algorithm(), x, weight, dy, want_dx, want_dw)
}

/// [`backward`] with the input gradient by the given algorithm.
pub fn backward_by(
    g: &Geometry,
    algorithm: Algorithm,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    want_dx: bool,
    want_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    if want_dx && algorithm == Algorithm::Winograd {
        assert!(g.winograd_fits(), "Winograd F(2×2, 3×3) on {g:?}");
        // dx = conv(dy, W') with W' the rotated, channel-swapped weight: itself a 3×3 unit-stride
        // convolution with padding 1.
        let swapped = Geometry {
            cin: g.cout,
            cout: g.cin,
            ..*g
        };
        let dx = winograd(&swapped, dy, &rotated(g, weight), None);
        let (_, dw) = backward_shifted(g, x, weight, dy, false, want_dw);
        return (Some(dx), dw);
    }
    backward_shifted(g, x, weight, dy, want_dx, want_dw)
}

/// One thread's part of [`backward`]: its images of x and dy, its part of dx, its dW.
type BackwardPiece<'a> = (&'a [f32], &'a [f32], &'a mut [f32], Vec<f32>);

/// [`backward`] by shifted matrix products.
fn backward_shifted(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    want_dx: bool,
    want_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    if !want_dx && !want_dw {
        return (None, None);
    }
    let l = g.layout();
    let (c, o, taps) = (g.cin, g.cout, g.taps());
    let (in_img, out_img) = (c * g.h * g.w, o * l.ho * l.wo);
    let wt = tap_matrices(g, weight, true);
    let tap = |t: usize| MatRef::from_column_major_slice(&wt[t * o * c..(t + 1) * o * c], o, c);
    let mut dx = vec![0.0f32; if want_dx { g.batch * in_img } else { 0 }];
    let (chunks, par) = g.chunks();
    // Per chunk: its images of x and dy, its part of dx, and its dW (each tap a column-major
    // [cin, cout]), summed over chunks in chunk order below.
    let mut pieces: Vec<BackwardPiece> = Vec::new();
    let mut rest = dx.as_mut_slice();
    for r in &chunks {
        let take = if want_dx { r.len() * in_img } else { 0 };
        let (head, tail) = rest.split_at_mut(take);
        let dw = vec![0.0f32; if want_dw { taps * o * c } else { 0 }];
        pieces.push((
            &x[r.start * in_img..r.end * in_img],
            &dy[r.start * out_img..r.end * out_img],
            head,
            dw,
        ));
        rest = tail;
    }
    let per = g.images_per_pass(&l);
    pieces
        .par_iter_mut()
        .for_each(|(x_all, dy_all, dx_all, dw)| {
            let images = dy_all.len() / out_img;
            for s in (0..images).step_by(per) {
                let e = (s + per).min(images);
                let (x, dy) = (
                    &x_all[s * in_img..e * in_img],
                    &dy_all[s * out_img..e * out_img],
                );
                let dx: &mut [f32] = if want_dx {
                    &mut dx_all[s * in_img..e * in_img]
                } else {
                    &mut []
                };
                let n = e - s;
                if g.pointwise() {
                    let hw = g.h * g.w;
                    for img in 0..n {
                        let dyi =
                            MatRef::from_column_major_slice(&dy[img * out_img..][..out_img], hw, o);
                        if want_dx {
                            let dst = MatMut::from_column_major_slice_mut(
                                &mut dx[img * in_img..][..in_img],
                                hw,
                                c,
                            );
                            matmul(dst, Accum::Replace, dyi, tap(0), 1.0f32, par);
                        }
                        if want_dw {
                            let xi = MatRef::from_column_major_slice(
                                &x[img * in_img..][..in_img],
                                hw,
                                c,
                            );
                            let dst = MatMut::from_column_major_slice_mut(dw, c, o);
                            matmul(dst, Accum::Add, xi.transpose(), dyi, 1.0f32, par);
                        }
                    }
                    continue;
                }
                let rows = (n - 1) * l.plane + l.wide;
                let stride = l.channel(g, n);
                let dy_wide = widen(g, &l, dy, n);
                let dyw = |blk: &std::ops::Range<usize>| {
                    MatRef::from_column_major_slice_with_stride(
                        &dy_wide[blk.start..],
                        blk.len(),
                        o,
                        rows,
                    )
                };
                if want_dx {
                    let mut dph = scratch(l.phases * c * stride);
                    for blk in row_blocks(rows, c, o) {
                        for t in 0..taps {
                            let start = g.tap_start(&l, t, n) + blk.start;
                            let dst = MatMut::from_column_major_slice_with_stride_mut(
                                &mut dph[start..],
                                blk.len(),
                                c,
                                stride,
                            );
                            matmul(dst, Accum::Add, dyw(&blk), tap(t), 1.0f32, par);
                        }
                    }
                    scatter_phases(g, &l, &dph, n, dx);
                    recycle(dph);
                }
                if want_dw {
                    let phases = gather_phases(g, &l, x, n);
                    for (b, blk) in row_blocks(rows, c, o).enumerate() {
                        // The piece's dW: replaced by its first pass's first block, then summed into.
                        let acc = if s == 0 && b == 0 {
                            Accum::Replace
                        } else {
                            Accum::Add
                        };
                        for t in 0..taps {
                            let start = g.tap_start(&l, t, n) + blk.start;
                            let lhs = MatRef::from_column_major_slice_with_stride(
                                &phases[start..],
                                blk.len(),
                                c,
                                stride,
                            );
                            let dst = MatMut::from_column_major_slice_mut(
                                &mut dw[t * o * c..][..o * c],
                                c,
                                o,
                            );
                            matmul(dst, acc, lhs.transpose(), dyw(&blk), 1.0f32, par);
                        }
                    }
                    recycle(phases);
                }
                recycle(dy_wide);
            }
        });
    let dw = want_dw.then(|| weight_grad(g, pieces.iter().map(|(.., part)| part.as_slice())));
    drop(pieces);
    (want_dx.then_some(dx), dw)
}

/// dW `[cout, cin, kh, kw]` from the threads' parts, each `[tap][cout][cin]`, summed in order.
fn weight_grad<'a>(g: &Geometry, parts: impl Iterator<Item = &'a [f32]>) -> Vec<f32> {
    let (o, c, taps) = (g.cout, g.cin, g.taps());
    let mut dw = vec![0.0f32; taps * o * c];
    for part in parts {
        for (a, b) in dw.iter_mut().zip(part) {
            *a += b;
        }
    }
    let mut out = vec![0.0f32; dw.len()];
    for t in 0..taps {
        for oi in 0..o {
            for ci in 0..c {
                out[(oi * c + ci) * taps + t] = dw[(t * o + oi) * c + ci];
            }
        }
    }
    out
}

/// The bias gradient Σ over batch and pixels of `dy` `[batch, cout, hw]`.
pub fn bias_grad(dy: &[f32], cout: usize, hw: usize) -> Vec<f32> {
    let mut db = vec![0.0f64; cout];
    vectorized(
        #[inline(always)]
        || {
            for (i, map) in dy.chunks_exact(hw).enumerate() {
                // Eight f64 lanes, then their sum.
                let mut acc = [0.0f64; 8];
                let body = map.chunks_exact(8);
                let tail = body.remainder();
                for v in body {
                    for k in 0..8 {
                        acc[k] += v[k] as f64;
                    }
                }
                db[i % cout] +=
                    acc.iter().sum::<f64>() + tail.iter().map(|&v| v as f64).sum::<f64>();
            }
        },
    );
    db.into_iter().map(|v| v as f32).collect()
}

/// How a convolution's forward pass and input gradient are computed (the weight gradient is always
/// by shifted products).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// One matrix product per tap on shifted views ([`forward`]'s module documentation).
    Shifted,
    /// Winograd's F(2×2, 3×3): 3×3 kernels at unit stride with one pixel of padding only.
    Winograd,
}

impl Geometry {
    /// Whether Winograd's F(2×2, 3×3) can compute this convolution.
    pub fn winograd_fits(&self) -> bool {
        self.kh == 3 && self.kw == 3 && self.stride == [1, 1] && self.padding == [1, 1]
    }

    /// The algorithm [`forward`] and [`backward`] use: shifted products everywhere. Winograd's
    /// F(2×2, 3×3) does 2.25× fewer multiplications, but its transforms (the tiles of the input
    /// and of the output, four times their size, through memory) cost more than that saves next
    /// to the cache-blocked shifted products on every U-Net shape measured (`bench --mode conv`
    /// times both; BENCHMARKS.md), so it runs only when asked for ([`forward_by`]).
    pub fn algorithm(&self) -> Algorithm {
        Algorithm::Shifted
    }
}

/// The fewest pixels at which a 1×1 convolution runs as one product per image.
const POINTWISE_MIN_PIXELS: usize = 512;

/// 3×3 correlation at unit stride and padding 1 by Winograd's minimal filtering F(2×2, 3×3)
/// (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks", eq. 7–8:
/// Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A for each 4×4 input tile d and 2×2 output tile): 16 matrix products
/// of [tiles, cin] × [cin, cout], one per tile element, in place of nine of [pixels, cin] × [cin,
/// cout]: 2.25× fewer multiplications. `x` `[batch, cin, h, w]`, `weight` `[cout, cin, 3, 3]`.
fn winograd(g: &Geometry, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (c, o, h, w) = (g.cin, g.cout, g.h, g.w);
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    let u = winograd_weights(o, c, weight);
    let (in_img, out_img) = (c * h * w, o * h * w);
    let mut out = vec![0.0f32; g.batch * out_img];
    let (chunks, par) = g.chunks();
    let pieces = split_images(x, &mut out, &chunks, in_img, out_img);
    pieces.into_par_iter().for_each(|(x, y)| {
        let n = x.len() / in_img;
        let tiles = n * th * tw;
        // V = Bᵀ d B, stored [ξ][c][tile]: for each ξ a column-major [tiles, cin].
        let mut v = scratch_overwritten(16 * c * tiles);
        winograd_input(&mut v, x, n, [c, h, w]);
        // M_ξ = V_ξ U_ξ: [tiles, cout] per ξ, stored [ξ][o][tile].
        let mut m = scratch_overwritten(16 * o * tiles);
        for (xi, mx) in m.chunks_exact_mut(o * tiles).enumerate() {
            let lhs = MatRef::from_column_major_slice(&v[xi * c * tiles..][..c * tiles], tiles, c);
            let rhs = MatRef::from_column_major_slice(&u[xi * o * c..][..o * c], c, o);
            let dst = MatMut::from_column_major_slice_mut(mx, tiles, o);
            matmul(dst, Accum::Replace, lhs, rhs, 1.0f32, par);
        }
        recycle(v);
        winograd_output(y, &m, n, [o, h, w], bias);
        recycle(m);
    });
    out
}

/// Winograd's weight transform U = G g Gᵀ of each (o, c) 3×3 kernel of `weight` `[o, c, 3, 3]`,
/// stored `[ξ][o][c]`: for each of the 16 tile elements ξ a column-major `[c, o]`.
fn winograd_weights(o: usize, c: usize, weight: &[f32]) -> Vec<f32> {
    let mut u = vec![0.0f32; 16 * o * c];
    for oc in 0..o * c {
        let k = &weight[oc * 9..oc * 9 + 9];
        // G g (4×3), then (G g) Gᵀ (4×4).
        let mut gg = [[0.0f32; 3]; 4];
        for j in 0..3 {
            let (a, b, d) = (k[j], k[3 + j], k[6 + j]);
            gg[0][j] = a;
            gg[1][j] = 0.5 * (a + b + d);
            gg[2][j] = 0.5 * (a - b + d);
            gg[3][j] = d;
        }
        for (i, row) in gg.iter().enumerate() {
            let [a, b, d] = *row;
            let t = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
            for (j, v) in t.into_iter().enumerate() {
                u[(i * 4 + j) * o * c + oc] = v;
            }
        }
    }
    u
}

/// Winograd's input transform V = Bᵀ d B of every 4×4 tile d (stride 2, one pixel of padding) of
/// the `n` images of `x` `[n, c, h, w]`, written to `v` as `[ξ][c][tile]`: for each ξ a
/// column-major `[tiles, c]`.
fn winograd_input(v: &mut [f32], x: &[f32], n: usize, [c, h, w]: [usize; 3]) {
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    let tiles = n * th * tw;
    vectorized(
        #[inline(always)]
        || {
            // Four padded input rows (one column of padding left, up to two right), their Bᵀ
            // combinations, and those split into even and odd columns (tw + 1 each).
            let wp = 2 * tw + 2;
            let mut rows = [
                vec![0.0f32; wp],
                vec![0.0f32; wp],
                vec![0.0f32; wp],
                vec![0.0f32; wp],
            ];
            let mut even = vec![0.0f32; tw + 1];
            let mut odd = vec![0.0f32; tw + 1];
            for ci in 0..c {
                for img in 0..n {
                    let plane = &x[(img * c + ci) * h * w..][..h * w];
                    for ty in 0..th {
                        for (a, row) in rows.iter_mut().enumerate() {
                            let yy = (2 * ty + a).wrapping_sub(1);
                            if yy < h {
                                row[1..w + 1].copy_from_slice(&plane[yy * w..(yy + 1) * w]);
                            } else {
                                row[1..w + 1].fill(0.0);
                            }
                        }
                        let base = (img * th + ty) * tw;
                        for i in 0..4 {
                            // Bᵀ over the rows: t0 = r0 − r2, t1 = r1 + r2, t2 = r2 − r1,
                            // t3 = r1 − r3; then split by column parity.
                            let [r0, r1, r2, r3] = &rows;
                            for (k, (e, od)) in even.iter_mut().zip(odd.iter_mut()).enumerate() {
                                let (p, q) = (2 * k, 2 * k + 1);
                                let (tp, tq) = match i {
                                    0 => (r0[p] - r2[p], r0[q] - r2[q]),
                                    1 => (r1[p] + r2[p], r1[q] + r2[q]),
                                    2 => (r2[p] - r1[p], r2[q] - r1[q]),
                                    _ => (r1[p] - r3[p], r1[q] - r3[q]),
                                };
                                *e = tp;
                                *od = tq;
                            }
                            // B over the columns of tile tx: d = (e[tx], o[tx], e[tx+1], o[tx+1]).
                            let slot = |j: usize| ((i * 4 + j) * c + ci) * tiles + base;
                            let (e0, e1, o0, o1) = (&even[..tw], &even[1..], &odd[..tw], &odd[1..]);
                            for (k, out) in v[slot(0)..][..tw].iter_mut().enumerate() {
                                *out = e0[k] - e1[k];
                            }
                            for (k, out) in v[slot(1)..][..tw].iter_mut().enumerate() {
                                *out = o0[k] + e1[k];
                            }
                            for (k, out) in v[slot(2)..][..tw].iter_mut().enumerate() {
                                *out = e1[k] - o0[k];
                            }
                            for (k, out) in v[slot(3)..][..tw].iter_mut().enumerate() {
                                *out = o0[k] - o1[k];
                            }
                        }
                    }
                }
            }
        },
    );
}

/// Winograd's output transform Y = Aᵀ M A of every tile of `m` (`[ξ][o][tile]`) into the `n`
/// images of `y` `[n, o, h, w]`, plus the bias.
fn winograd_output(
    y: &mut [f32],
    m: &[f32],
    n: usize,
    [o, h, w]: [usize; 3],
    bias: Option<&[f32]>,
) {
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    let tiles = n * th * tw;
    // Y = Aᵀ M A per tile, plus the bias; tiles past the edge of an odd size are cut.
    vectorized(
        #[inline(always)]
        || {
            let (mut s, mut d) = (
                [
                    vec![0.0f32; tw],
                    vec![0.0f32; tw],
                    vec![0.0f32; tw],
                    vec![0.0f32; tw],
                ],
                [
                    vec![0.0f32; tw],
                    vec![0.0f32; tw],
                    vec![0.0f32; tw],
                    vec![0.0f32; tw],
                ],
            );
            let mut pair = [vec![0.0f32; 2 * tw], vec![0.0f32; 2 * tw]];
            for oi in 0..o {
                let b = bias.map_or(0.0, |b| b[oi]);
                for img in 0..n {
                    let map = &mut y[(img * o + oi) * h * w..][..h * w];
                    for ty in 0..th {
                        let t0 = (img * th + ty) * tw;
                        let row = |xi: usize| &m[(xi * o + oi) * tiles + t0..][..tw];
                        for j in 0..4 {
                            let (m0, m1, m2, m3) = (row(j), row(4 + j), row(8 + j), row(12 + j));
                            for k in 0..tw {
                                s[j][k] = m0[k] + m1[k] + m2[k];
                                d[j][k] = m1[k] - m2[k] - m3[k];
                            }
                        }
                        for (r, sd) in [&s, &d].into_iter().enumerate() {
                            for k in 0..tw {
                                pair[r][2 * k] = sd[0][k] + sd[1][k] + sd[2][k] + b;
                                pair[r][2 * k + 1] = sd[1][k] - sd[2][k] - sd[3][k] + b;
                            }
                        }
                        for (r, p) in pair.iter().enumerate() {
                            let yy = 2 * ty + r;
                            if yy < h {
                                map[yy * w..(yy + 1) * w].copy_from_slice(&p[..w]);
                            }
                        }
                    }
                }
            }
        },
    );
}

/// Each chunk of images' part of the input `x` and of the output `out` (`in_img` and `out_img`
/// values per image).
fn split_images<'a>(
    x: &'a [f32],
    out: &'a mut [f32],
    chunks: &[std::ops::Range<usize>],
    in_img: usize,
    out_img: usize,
) -> Vec<(&'a [f32], &'a mut [f32])> {
    let mut pieces = Vec::with_capacity(chunks.len());
    let mut rest = out;
    for r in chunks {
        let (head, tail) = rest.split_at_mut(r.len() * out_img);
        pieces.push((&x[r.start * in_img..r.end * in_img], head));
        rest = tail;
    }
    pieces
}

/// The weight of the input gradient of a 3×3 unit-stride convolution as a forward one:
/// W'[c, o, i, j] = W[o, c, 2 − i, 2 − j] (channels swapped, taps rotated by 180°).
fn rotated(g: &Geometry, weight: &[f32]) -> Vec<f32> {
    let (o, c) = (g.cout, g.cin);
    let mut out = vec![0.0f32; weight.len()];
    for oi in 0..o {
        for ci in 0..c {
            for t in 0..9 {
                out[(ci * o + oi) * 9 + 8 - t] = weight[(oi * c + ci) * 9 + t];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [−1, 1) (a linear congruential stream).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f64 / (1u64 << 23) as f64 - 1.0) as f32
            })
            .collect()
    }

    /// The input pixel that output (ho, wo) reads at tap (i, j), or `None` in the padding.
    fn source(g: &Geometry, ho: usize, wo: usize, i: usize, j: usize) -> Option<(usize, usize)> {
        let y = (g.stride[0] * ho + i).checked_sub(g.padding[0])?;
        let x = (g.stride[1] * wo + j).checked_sub(g.padding[1])?;
        (y < g.h && x < g.w).then_some((y, x))
    }

    /// The convolution and both gradients by their definitions, in f64: (y, dx, dW).
    fn reference(g: &Geometry, x: &[f32], w: &[f32], b: &[f32], dy: &[f32]) -> [Vec<f64>; 3] {
        let [_, _, ho, wo] = g.output();
        let (c, o, kh, kw) = (g.cin, g.cout, g.kh, g.kw);
        let mut y = vec![0.0f64; g.batch * o * ho * wo];
        let mut dx = vec![0.0f64; x.len()];
        let mut dw = vec![0.0f64; w.len()];
        for n in 0..g.batch {
            for oi in 0..o {
                for (yy, xx) in (0..ho).flat_map(|a| (0..wo).map(move |b| (a, b))) {
                    let at = ((n * o + oi) * ho + yy) * wo + xx;
                    let mut acc = b[oi] as f64;
                    for ci in 0..c {
                        for (i, j) in (0..kh).flat_map(|i| (0..kw).map(move |j| (i, j))) {
                            if let Some((sy, sx)) = source(g, yy, xx, i, j) {
                                let xi = ((n * c + ci) * g.h + sy) * g.w + sx;
                                let wi = ((oi * c + ci) * kh + i) * kw + j;
                                acc += w[wi] as f64 * x[xi] as f64;
                                dx[xi] += w[wi] as f64 * dy[at] as f64;
                                dw[wi] += x[xi] as f64 * dy[at] as f64;
                            }
                        }
                    }
                    y[at] = acc;
                }
            }
        }
        [y, dx, dw]
    }

    /// max |ours − reference| over max |reference|.
    fn rel(ours: &[f32], reference: &[f64]) -> f64 {
        assert_eq!(ours.len(), reference.len());
        let scale = reference.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
        let err = ours
            .iter()
            .zip(reference)
            .fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
        err / scale
    }

    fn check(x: [usize; 4], w: [usize; 4], stride: [usize; 2], padding: [usize; 2]) {
        let g = Geometry::new(x, w, stride, padding).unwrap();
        let xs = values(x.iter().product(), 1);
        let ws = values(w.iter().product(), 2);
        let bs = values(w[0], 3);
        let dys = values(g.output().iter().product(), 4);
        let [y, dx, dw] = reference(&g, &xs, &ws, &bs, &dys);
        let algorithms = if g.winograd_fits() {
            vec![Algorithm::Shifted, Algorithm::Winograd]
        } else {
            vec![Algorithm::Shifted]
        };
        for alg in algorithms {
            let case = format!("{alg:?} x {x:?} w {w:?} stride {stride:?} padding {padding:?}");
            let ours = forward_by(&g, alg, &xs, &ws, Some(&bs));
            assert!(rel(&ours, &y) < 1e-5, "{case}: y {}", rel(&ours, &y));
            for (want_dx, want_dw) in [(true, true), (true, false), (false, true)] {
                let (odx, odw) = backward_by(&g, alg, &xs, &ws, &dys, want_dx, want_dw);
                assert_eq!((odx.is_some(), odw.is_some()), (want_dx, want_dw));
                if let Some(odx) = odx {
                    assert!(rel(&odx, &dx) < 1e-5, "{case}: dx {}", rel(&odx, &dx));
                }
                if let Some(odw) = odw {
                    assert!(rel(&odw, &dw) < 1e-5, "{case}: dW {}", rel(&odw, &dw));
                }
            }
        }
        let case = format!("x {x:?} w {w:?}");
        let db: Vec<f64> = (0..g.cout)
            .map(|oi| {
                dys.chunks_exact(dys.len() / g.batch / g.cout)
                    .skip(oi)
                    .step_by(g.cout)
                    .flatten()
                    .map(|&v| v as f64)
                    .sum()
            })
            .collect();
        let [_, _, ho, wo] = g.output();
        assert!(
            rel(&bias_grad(&dys, g.cout, ho * wo), &db) < 1e-6,
            "{case}: db"
        );
    }

    /// Odd sizes, channels off multiples of 16, strides 1 and 2 (also mixed), padding 0–2, kernel
    /// sizes 1–5 (and 1×3), batches 1, 2 (fewer images than threads or one each) and 33.
    #[test]
    fn kernels_match_the_definition_on_awkward_shapes() {
        check([2, 3, 7, 5], [5, 3, 3, 3], [1, 1], [1, 1]);
        check([1, 17, 9, 11], [19, 17, 3, 3], [1, 1], [1, 1]);
        check([33, 5, 6, 7], [6, 5, 3, 3], [1, 1], [1, 1]);
        check([3, 4, 9, 9], [7, 4, 3, 3], [2, 2], [0, 0]);
        check([2, 4, 8, 10], [3, 4, 3, 3], [2, 2], [1, 1]);
        check([33, 3, 11, 6], [5, 3, 3, 3], [2, 1], [1, 0]);
        check([2, 6, 5, 5], [4, 6, 1, 1], [1, 1], [0, 0]);
        check([1, 18, 3, 7], [20, 18, 1, 1], [1, 1], [0, 0]);
        check([3, 5, 23, 24], [7, 5, 1, 1], [1, 1], [0, 0]);
        // Inputs whose padded buffer exceeds PASS_BYTES, so each thread's images go in several
        // passes (dW summed across them): compact, strided and per-image 1×1.
        check([5, 256, 30, 30], [8, 256, 3, 3], [1, 1], [1, 1]);
        check([3, 300, 29, 29], [4, 300, 3, 3], [2, 2], [0, 0]);
        check([3, 600, 23, 24], [5, 600, 1, 1], [1, 1], [0, 0]);
        check([33, 2, 4, 4], [3, 2, 1, 1], [2, 2], [0, 0]);
        check([2, 3, 9, 8], [2, 3, 5, 5], [1, 1], [2, 2]);
        check([2, 3, 9, 8], [2, 3, 5, 5], [3, 2], [2, 1]);
        check([2, 3, 6, 9], [4, 3, 1, 3], [1, 1], [0, 1]);
        check([1, 1, 3, 3], [1, 1, 3, 3], [1, 1], [0, 0]);
        // Winograd F(2×2, 3×3) (16+ channels, 3×3, stride 1, padding 1): odd and even sizes, one
        // row or column of tiles cut at the edge, batch 1 and 33.
        check([33, 16, 5, 6], [17, 16, 3, 3], [1, 1], [1, 1]);
        check([1, 20, 1, 3], [16, 20, 3, 3], [1, 1], [1, 1]);
        check([2, 16, 8, 8], [32, 16, 3, 3], [1, 1], [1, 1]);
    }

    /// Winograd's fp32 error on the U-Net's 3×3 shapes (the `mnist` model's widths at 28×28 and
    /// 7×7, batch 2), against the definition in f64: printed, and held under 2e-6 of the output's
    /// largest value (the shifted products' error is about 3e-7 on the same shapes).
    #[test]
    fn winograd_error_on_the_unet_shapes() {
        for (c, o, hw) in [(64, 64, 28), (128, 128, 7), (256, 128, 7)] {
            let g = Geometry::new([2, c, hw, hw], [o, c, 3, 3], [1, 1], [1, 1]).unwrap();
            // Activations around ±1 and weights of a He-initialised layer.
            let xs = values(2 * c * hw * hw, 11);
            let scale = (2.0 / (9.0 * c as f32)).sqrt();
            let ws: Vec<f32> = values(o * c * 9, 12).iter().map(|v| v * scale).collect();
            let dys = values(2 * o * hw * hw, 13);
            let [y, dx, _] = reference(&g, &xs, &ws, &vec![0.0; o], &dys);
            let wino = Algorithm::Winograd;
            let e_y = rel(&forward_by(&g, wino, &xs, &ws, None), &y);
            let e_dx = rel(
                &backward_by(&g, wino, &xs, &ws, &dys, true, false)
                    .0
                    .unwrap(),
                &dx,
            );
            eprintln!("Winograd F(2×2, 3×3), {c}→{o} at {hw}×{hw}: y {e_y:.2e}, dx {e_dx:.2e}");
            assert!(e_y < 2e-6 && e_dx < 2e-6, "{c}→{o} at {hw}: {e_y} {e_dx}");
        }
    }

    /// The gradients against central differences of L = Σ r·y (exact for a linear map up to
    /// rounding, so a unit step): a few coordinates of x and W on a strided and a padded case.
    #[test]
    fn gradients_match_central_differences() {
        for (x, w, stride, padding) in [
            ([2, 3, 7, 6], [4, 3, 3, 3], [1, 1], [1, 1]),
            ([3, 5, 9, 9], [2, 5, 3, 3], [2, 2], [0, 0]),
        ] {
            let g = Geometry::new(x, w, stride, padding).unwrap();
            let xs = values(x.iter().product(), 5);
            let ws = values(w.iter().product(), 6);
            let r = values(g.output().iter().product(), 7);
            let loss = |xs: &[f32], ws: &[f32]| -> f64 {
                let y = forward(&g, xs, ws, None);
                y.iter().zip(&r).map(|(a, b)| *a as f64 * *b as f64).sum()
            };
            let (dx, dw) = backward(&g, &xs, &ws, &r, true, true);
            let (dx, dw) = (dx.unwrap(), dw.unwrap());
            central(&xs, &dx, 37, |v| loss(v, &ws), "dx");
            central(&ws, &dw, 5, |v| loss(&xs, v), "dW");
        }
    }

    /// Every `step`-th coordinate of `grad` against the central difference of `loss` at `at`
    /// (unit step: exact for a linear map up to rounding).
    fn central(at: &[f32], grad: &[f32], step: usize, loss: impl Fn(&[f32]) -> f64, name: &str) {
        for k in (0..at.len()).step_by(step) {
            let (mut up, mut down) = (at.to_vec(), at.to_vec());
            up[k] += 1.0;
            down[k] -= 1.0;
            let fd = (loss(&up) - loss(&down)) / 2.0;
            let g = grad[k] as f64;
            assert!(
                (fd - g).abs() < 1e-4 * (1.0 + fd.abs()),
                "{name}[{k}]: {fd} vs {g}"
            );
        }
    }

    #[test]
    fn large_inputs_are_taken_in_several_passes() {
        let g = Geometry::new([5, 256, 30, 30], [8, 256, 3, 3], [1, 1], [1, 1]).unwrap();
        assert_eq!(g.images_per_pass(&g.layout()), 2);
        let g = Geometry::new([3, 300, 29, 29], [4, 300, 3, 3], [2, 2], [0, 0]).unwrap();
        assert_eq!(g.images_per_pass(&g.layout()), 1);
    }

    #[test]
    fn shapes_the_kernel_cannot_take_are_refused() {
        assert!(Geometry::new([1, 3, 2, 2], [4, 3, 3, 3], [1, 1], [0, 0]).is_none());
        assert!(Geometry::new([1, 3, 4, 4], [4, 2, 3, 3], [1, 1], [1, 1]).is_none());
        assert!(Geometry::new([0, 3, 4, 4], [4, 3, 3, 3], [1, 1], [1, 1]).is_none());
        assert!(Geometry::new([1, 3, 4, 4], [4, 3, 3, 3], [0, 1], [1, 1]).is_none());
        let g = Geometry::new([2, 3, 28, 28], [8, 3, 3, 3], [2, 2], [1, 1]).unwrap();
        assert_eq!(g.output(), [2, 8, 14, 14]);
    }
}
