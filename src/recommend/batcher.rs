//! Dynamic batching of question embeddings for the HTTP API.
//!
//! Concurrent recommend requests put their question on a bounded queue; one
//! dedicated OS thread (not a tokio blocking thread) takes everything queued,
//! in arrival order, up to a token budget, embeds it in one call and answers
//! each request through its own oneshot channel. Async callers await the
//! answer without blocking the runtime.
//!
//! Invariants:
//! - The queue never holds more than `capacity` questions: a submit beyond
//!   that fails at once with [`QueueError::Full`] (the API's 429 `busy`).
//! - A batch holds texts of one kind, in arrival order, whose estimated
//!   tokens ([`approx_tokens`]) fit the budget; a text over the budget on its
//!   own still goes, alone.
//! - One text's failure never fails the rest of its batch: when a batch call
//!   fails, each text is embedded alone and gets its own result.
//! - The worker never panics: a panic inside the embedder is caught and
//!   reported to the requests of that batch. Should the thread end anyway,
//!   every waiting and later request gets [`QueueError::Stopped`], never a
//!   hang.
//! - Dropping the [`EmbedQueue`] stops the worker; questions still queued
//!   then get [`QueueError::Stopped`].
//! - Requests whose caller gave up (the HTTP client disconnected) are skipped
//!   when the next batch is formed.
//! - After a batch the worker may hold the next one briefly (see
//!   [`BatchSettings::max_gather_ms`]) for the callers it just answered to
//!   come back, never longer than a tenth of the batch it just embedded and
//!   never when what waits already fills a batch; it never holds a request
//!   that arrives at an idle worker with nothing answered before it.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::embedding::{EmbedError, Embedder, Embedding, TextKind};

/// Queue size and batch budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// Most questions waiting (not counting the batch being embedded).
    pub capacity: usize,
    /// Most estimated tokens per batch ([`approx_tokens`]).
    pub batch_tokens: usize,
    /// The longest the worker holds a batch, in milliseconds, after
    /// answering one, waiting for as many questions as were in the system
    /// when that batch ended (the ones just answered, whose callers ask
    /// again, plus those waiting); 0 never holds. The hold is also at most
    /// [`GATHER_SHARE`] of the time the last batch took, and ends as soon as
    /// that many questions wait or their tokens fill a batch.
    ///
    /// Why: under a steady load of N concurrent callers, a worker that takes
    /// whatever waits settles into two half batches (N/2 waiting while N/2
    /// are embedded), and this encoder embeds 8 short questions at about 80%
    /// of the throughput of 16 offline. Over HTTP (the README's Performance
    /// section) the hold raised concurrency 4 by about 16% and left
    /// concurrency 16 unchanged within the noise.
    pub max_gather_ms: u64,
}

/// The longest a hold lasts, as a share of the last batch's time.
pub const GATHER_SHARE: f64 = 0.1;

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            capacity: 256,
            batch_tokens: 2048,
            max_gather_ms: 10,
        }
    }
}

/// Why a queued embedding did not produce a vector.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue holds `capacity` questions already; retry later.
    #[error("{capacity} questions are already waiting to be embedded")]
    Full { capacity: usize },
    /// The worker thread has ended (the queue was dropped, or it died).
    #[error("the embedding worker has stopped")]
    Stopped,
    /// The embedder panicked or broke its contract on this text.
    #[error("the embedding worker failed: {0}")]
    Failed(String),
    /// The embedder refused or failed on this text.
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

/// What the worker reports after forming each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// Requests in the batch.
    pub requests: usize,
    /// Their estimated tokens.
    pub tokens: usize,
    /// Questions left waiting in the queue.
    pub depth: usize,
}

/// Called by the worker with every batch it forms (metrics).
pub type BatchObserver = Box<dyn Fn(BatchInfo) + Send + Sync>;

/// An estimate of the model tokens of a text (its prefix and start/end
/// tokens included), from its characters alone: the queue does not see the
/// tokenizer. CJK characters count one each (SentencePiece gives them one
/// piece, or less), other visible characters one per three (Latin words
/// split into pieces of three to four characters), plus 5 for the prefix and
/// the special tokens. It only sizes batches; it never changes what is
/// embedded.
pub fn approx_tokens(text: &str) -> usize {
    let (mut cjk, mut other) = (0usize, 0usize);
    for c in text.chars() {
        if is_cjk(c) {
            cjk += 1;
        } else if !c.is_whitespace() {
            other += 1;
        }
    }
    5 + cjk + other.div_ceil(3)
}

/// CJK ideographs, kana, hangul, CJK punctuation and full-width forms.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x2E80..=0x9FFF | 0xA960..=0xA97F | 0xAC00..=0xD7FF | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F | 0xFF00..=0xFFEF | 0x20000..=0x3FFFF)
}

type Reply = oneshot::Sender<Result<Embedding, QueueError>>;

/// One queued text and where its answer goes.
struct Job {
    text: String,
    kind: TextKind,
    tokens: usize,
    reply: Reply,
}

struct State {
    pending: VecDeque<Job>,
    /// Set when the queue is dropped: the worker ends.
    closed: bool,
    /// Cleared when the worker thread ends, however it ends.
    alive: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    capacity: usize,
    batch_tokens: usize,
    max_gather: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A submitted text: wait on it for its embedding.
pub struct Ticket {
    rx: oneshot::Receiver<Result<Embedding, QueueError>>,
}

impl Ticket {
    /// Awaits the embedding without blocking the async runtime.
    pub async fn wait(self) -> Result<Embedding, QueueError> {
        self.rx.await.unwrap_or(Err(QueueError::Stopped))
    }

    /// Blocks this thread until the embedding is ready. Not for async
    /// contexts (tokio refuses blocking receives there).
    pub fn wait_blocking(self) -> Result<Embedding, QueueError> {
        self.rx.blocking_recv().unwrap_or(Err(QueueError::Stopped))
    }
}

/// The queue and its worker thread.
pub struct EmbedQueue {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

impl EmbedQueue {
    /// Starts the worker thread. Capacity and budget below 1 count as 1.
    pub fn start(
        embedder: Arc<dyn Embedder>,
        settings: BatchSettings,
        observer: Option<BatchObserver>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pending: VecDeque::new(),
                closed: false,
                alive: true,
            }),
            wake: Condvar::new(),
            capacity: settings.capacity.max(1),
            batch_tokens: settings.batch_tokens.max(1),
            max_gather: Duration::from_millis(settings.max_gather_ms),
        });
        let worker_shared = shared.clone();
        let worker = std::thread::Builder::new()
            .name("kefu-embed".into())
            .spawn(move || worker(&worker_shared, embedder.as_ref(), observer.as_ref()))?;
        Ok(Self {
            shared,
            worker: Some(worker),
        })
    }

    /// Queues a text, or fails at once when the queue is full or the worker
    /// has stopped.
    pub fn submit(&self, text: impl Into<String>, kind: TextKind) -> Result<Ticket, QueueError> {
        let text = text.into();
        let (reply, rx) = oneshot::channel();
        let mut st = self.shared.lock();
        if st.closed || !st.alive {
            return Err(QueueError::Stopped);
        }
        if st.pending.len() >= self.shared.capacity {
            return Err(QueueError::Full {
                capacity: self.shared.capacity,
            });
        }
        st.pending.push_back(Job {
            tokens: approx_tokens(&text),
            text,
            kind,
            reply,
        });
        drop(st);
        self.shared.wake.notify_one();
        Ok(Ticket { rx })
    }

    /// Queues a text and awaits its embedding.
    pub async fn embed(
        &self,
        text: impl Into<String>,
        kind: TextKind,
    ) -> Result<Embedding, QueueError> {
        self.submit(text, kind)?.wait().await
    }

    /// Questions waiting (not counting the batch being embedded).
    pub fn depth(&self) -> usize {
        self.shared.lock().pending.len()
    }

    /// Whether the worker thread is still running.
    pub fn is_alive(&self) -> bool {
        self.shared.lock().alive
    }

    pub fn settings(&self) -> BatchSettings {
        BatchSettings {
            capacity: self.shared.capacity,
            batch_tokens: self.shared.batch_tokens,
            max_gather_ms: self.shared.max_gather.as_millis() as u64,
        }
    }

    /// Stops the worker and waits for it to end (after the batch in hand).
    pub fn shutdown(mut self) {
        self.close();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }

    fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

impl Drop for EmbedQueue {
    /// Tells the worker to end; does not wait for it (it may be in the
    /// middle of a batch, and the drop may happen on the async runtime).
    fn drop(&mut self) {
        self.close();
    }
}

/// Marks the worker dead and fails everything queued, however the thread
/// ends (even by unwinding).
struct AliveGuard<'a>(&'a Shared);

impl Drop for AliveGuard<'_> {
    fn drop(&mut self) {
        let orphans = {
            let mut st = self.0.lock();
            st.alive = false;
            std::mem::take(&mut st.pending)
        };
        for job in orphans {
            let _ = job.reply.send(Err(QueueError::Stopped));
        }
    }
}

/// After a batch: wait for `target` questions, until `until` at the latest.
#[derive(Debug, Clone, Copy)]
struct Hold {
    target: usize,
    until: Instant,
}

impl Hold {
    /// The hold after a batch of `answered` questions that took `took`,
    /// with `waiting` questions queued when it ended; `None` when the
    /// settings or a near-instant batch allow no wait.
    fn after(answered: usize, waiting: usize, took: Duration, max: Duration) -> Option<Self> {
        let wait = took.mul_f64(GATHER_SHARE).min(max);
        (!wait.is_zero()).then(|| Self {
            target: answered + waiting,
            until: Instant::now() + wait,
        })
    }

    /// Whether the next batch should go now, with `pending` waiting.
    fn ready(&self, pending: &VecDeque<Job>, budget: usize) -> bool {
        pending.len() >= self.target
            || Instant::now() >= self.until
            || pending.iter().map(|j| j.tokens).sum::<usize>() >= budget
    }
}

fn worker(shared: &Shared, embedder: &dyn Embedder, observer: Option<&BatchObserver>) {
    let _guard = AliveGuard(shared);
    let mut hold: Option<Hold> = None;
    loop {
        let (batch, depth) = {
            let mut st = shared.lock();
            loop {
                if st.closed {
                    return;
                }
                if let Some(h) = hold.filter(|h| {
                    !st.pending.is_empty() && !h.ready(&st.pending, shared.batch_tokens)
                }) {
                    let left = h.until.saturating_duration_since(Instant::now());
                    st = shared
                        .wake
                        .wait_timeout(st, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    continue;
                }
                let batch = form_batch(&mut st.pending, shared.batch_tokens);
                if !batch.is_empty() {
                    break (batch, st.pending.len());
                }
                st = shared.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
        };
        if let Some(observe) = observer {
            let info = BatchInfo {
                requests: batch.len(),
                tokens: batch.iter().map(|j| j.tokens).sum(),
                depth,
            };
            // An observer's panic must not end the worker.
            let _ = catch_unwind(AssertUnwindSafe(|| observe(info)));
        }
        let answered = batch.len();
        let started = Instant::now();
        answer(embedder, batch);
        let waiting = shared.lock().pending.len();
        hold = Hold::after(answered, waiting, started.elapsed(), shared.max_gather);
    }
}

/// Takes the next batch from the front of the queue: jobs of the first
/// job's kind, in order, while their estimated tokens fit the budget (the
/// first one always goes). Jobs whose caller has gone are dropped.
fn form_batch(pending: &mut VecDeque<Job>, budget: usize) -> Vec<Job> {
    let mut batch: Vec<Job> = Vec::new();
    let mut tokens = 0usize;
    while let Some(front) = pending.front() {
        if front.reply.is_closed() {
            pending.pop_front();
            continue;
        }
        if let Some(first) = batch.first() {
            if front.kind != first.kind || tokens.saturating_add(front.tokens) > budget {
                break;
            }
        }
        let Some(job) = pending.pop_front() else {
            break;
        };
        tokens = tokens.saturating_add(job.tokens);
        batch.push(job);
    }
    batch
}

/// Embeds texts, turning a panic into an error.
fn guarded_embed(
    embedder: &dyn Embedder,
    texts: &[&str],
    kind: TextKind,
) -> Result<Vec<Embedding>, QueueError> {
    let _foreground = crate::embedding::foreground_work();
    match catch_unwind(AssertUnwindSafe(|| embedder.embed(texts, kind))) {
        Ok(Ok(v)) if v.len() == texts.len() => Ok(v),
        Ok(Ok(v)) => Err(QueueError::Failed(format!(
            "the embedder returned {} vectors for {} texts",
            v.len(),
            texts.len()
        ))),
        Ok(Err(e)) => Err(e.into()),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            tracing::error!(panic = %what, "the embedder panicked");
            Err(QueueError::Failed(format!("the embedder panicked: {what}")))
        }
    }
}

/// Embeds a batch in one call and answers each job; when the call fails,
/// embeds each text alone so one bad text fails only its own request.
fn answer(embedder: &dyn Embedder, batch: Vec<Job>) {
    let Some(kind) = batch.first().map(|j| j.kind) else {
        return;
    };
    let texts: Vec<&str> = batch.iter().map(|j| j.text.as_str()).collect();
    match guarded_embed(embedder, &texts, kind) {
        Ok(vectors) => {
            for (job, e) in batch.into_iter().zip(vectors) {
                let _ = job.reply.send(Ok(e));
            }
        }
        Err(e) if batch.len() == 1 => {
            if let Some(job) = batch.into_iter().next() {
                let _ = job.reply.send(Err(e));
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, texts = batch.len(), "batch failed: embedding one by one");
            for job in batch {
                let result = guarded_embed(embedder, &[job.text.as_str()], kind)
                    .map(|mut v| v.swap_remove(0));
                let _ = job.reply.send(result);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A fake model: the vector is [len, first char], "BAD" texts fail,
    /// "PANIC" texts panic, and an optional gate holds the first call until
    /// the test opens it.
    struct Fake {
        calls: Mutex<Vec<Vec<String>>>,
        gate: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
        /// How long every call takes.
        delay: Duration,
    }

    impl Fake {
        fn new() -> Arc<Self> {
            Self::slow(Duration::ZERO)
        }

        fn slow(delay: Duration) -> Arc<Self> {
            Arc::new(Self {
                calls: Mutex::new(Vec::new()),
                gate: Mutex::new(None),
                delay,
            })
        }

        /// The first embed call signals `entered` and waits for `open`.
        fn gated() -> (Arc<Self>, mpsc::Receiver<()>, mpsc::Sender<()>) {
            let fake = Self::new();
            let (entered_tx, entered_rx) = mpsc::channel();
            let (open_tx, open_rx) = mpsc::channel();
            *fake.gate.lock().unwrap() = Some((entered_tx, open_rx));
            (fake, entered_rx, open_tx)
        }

        fn calls(&self) -> Vec<Vec<String>> {
            self.calls.lock().unwrap().clone()
        }
    }

    fn vector_of(t: &str) -> Vec<f32> {
        vec![
            t.chars().count() as f32,
            t.chars().next().map_or(0, |c| c as u32) as f32,
        ]
    }

    impl Embedder for Fake {
        fn model_id(&self) -> &str {
            "fake"
        }
        fn dimension(&self) -> usize {
            2
        }
        fn embed(&self, texts: &[&str], _kind: TextKind) -> Result<Vec<Embedding>, EmbedError> {
            let gate = self.gate.lock().unwrap().take();
            if let Some((entered, open)) = gate {
                entered.send(()).unwrap();
                open.recv().unwrap();
            }
            std::thread::sleep(self.delay);
            self.calls
                .lock()
                .unwrap()
                .push(texts.iter().map(|t| t.to_string()).collect());
            if texts.iter().any(|t| t.contains("PANIC")) {
                panic!("fake model panics");
            }
            if let Some(i) = texts.iter().position(|t| t.contains("BAD")) {
                return Err(EmbedError::Tokenize(format!("text {i} is bad")));
            }
            Ok(texts
                .iter()
                .map(|t| Embedding {
                    token_ids: Vec::new(),
                    vector: vector_of(t),
                })
                .collect())
        }
    }

    fn job(text: &str, kind: TextKind) -> (Job, oneshot::Receiver<Result<Embedding, QueueError>>) {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            text: text.into(),
            kind,
            tokens: approx_tokens(text),
            reply,
        };
        (job, rx)
    }

    fn texts(batch: &[Job]) -> Vec<&str> {
        batch.iter().map(|j| j.text.as_str()).collect()
    }

    #[test]
    fn token_estimates_follow_the_text() {
        assert_eq!(approx_tokens(""), 5);
        assert_eq!(approx_tokens("退货的运费谁出啊"), 5 + 8);
        assert_eq!(approx_tokens("abc def"), 5 + 2);
        assert_eq!(approx_tokens("我的order"), 5 + 2 + 2);
        assert!(approx_tokens(&"长".repeat(2000)) > 2000);
    }

    #[test]
    fn batches_respect_the_budget_and_keep_order() {
        // Each of these is 5 + 4 = 9 tokens.
        let mut pending = VecDeque::new();
        let mut rxs = Vec::new();
        for t in ["一二三四", "五六七八", "九十一二", "三四五六", "七八九十"] {
            let (j, rx) = job(t, TextKind::Query);
            pending.push_back(j);
            rxs.push(rx);
        }
        let first = form_batch(&mut pending, 20);
        assert_eq!(texts(&first), ["一二三四", "五六七八"]);
        let second = form_batch(&mut pending, 27);
        assert_eq!(texts(&second), ["九十一二", "三四五六", "七八九十"]);
        assert!(form_batch(&mut pending, 27).is_empty());
    }

    #[test]
    fn a_text_over_the_budget_goes_alone() {
        let mut pending = VecDeque::new();
        let mut rxs = Vec::new();
        for t in ["长".repeat(100), "短".into(), "短短".into()] {
            let (j, rx) = job(&t, TextKind::Query);
            pending.push_back(j);
            rxs.push(rx);
        }
        assert_eq!(form_batch(&mut pending, 10).len(), 1);
        assert_eq!(texts(&form_batch(&mut pending, 10)), ["短"]);
        assert_eq!(texts(&form_batch(&mut pending, 10)), ["短短"]);
    }

    #[test]
    fn a_batch_holds_one_kind_and_skips_abandoned_requests() {
        let mut pending = VecDeque::new();
        let (a, _ra) = job("a", TextKind::Query);
        let (gone, rgone) = job("gone", TextKind::Query);
        let (b, _rb) = job("b", TextKind::Query);
        let (p, _rp) = job("p", TextKind::Passage);
        let (c, _rc) = job("c", TextKind::Query);
        pending.extend([a, gone, b, p, c]);
        drop(rgone);
        assert_eq!(texts(&form_batch(&mut pending, 1000)), ["a", "b"]);
        assert_eq!(texts(&form_batch(&mut pending, 1000)), ["p"]);
        assert_eq!(texts(&form_batch(&mut pending, 1000)), ["c"]);
    }

    #[test]
    fn queued_texts_are_embedded_together_and_answered_in_order() {
        let (fake, entered, open) = Fake::gated();
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = batches.clone();
        let q = EmbedQueue::start(
            fake.clone(),
            BatchSettings {
                capacity: 16,
                batch_tokens: 5 + 1 + 5 + 1 + 5 + 1,
                ..BatchSettings::default()
            },
            Some(Box::new(move |b| seen.lock().unwrap().push(b))),
        )
        .unwrap();
        let first = q.submit("gate", TextKind::Query).unwrap();
        entered.recv().unwrap();
        // The worker is inside the first call: these wait in the queue.
        let words = ["一", "二", "三", "四", "五"];
        let tickets: Vec<Ticket> = words
            .iter()
            .map(|w| q.submit(*w, TextKind::Query).unwrap())
            .collect();
        assert_eq!(q.depth(), 5);
        open.send(()).unwrap();
        assert_eq!(first.wait_blocking().unwrap().vector, vector_of("gate"));
        for (w, t) in words.iter().zip(tickets) {
            assert_eq!(t.wait_blocking().unwrap().vector, vector_of(w), "{w}");
        }
        assert_eq!(
            fake.calls(),
            vec![
                vec!["gate".to_string()],
                vec!["一".into(), "二".into(), "三".into()],
                vec!["四".into(), "五".into()],
            ]
        );
        let requests: Vec<usize> = batches.lock().unwrap().iter().map(|b| b.requests).collect();
        assert_eq!(requests, [1, 3, 2]);
        assert_eq!(batches.lock().unwrap()[1].depth, 2);
        q.shutdown();
    }

    /// One caller asks "a"; while it is embedded two more ask "b" and "c";
    /// as soon as "a" is answered its caller asks "d" (if `ask_again`).
    /// Returns the batches.
    fn closed_loop(max_gather_ms: u64, ask_again: bool) -> Vec<Vec<String>> {
        // Each call takes 1 s, so a hold lasts up to 100 ms: ample for this
        // thread to wake and ask again even on a loaded machine.
        let fake = Fake::slow(Duration::from_secs(1));
        let settings = BatchSettings {
            max_gather_ms,
            ..BatchSettings::default()
        };
        let q = EmbedQueue::start(fake.clone(), settings, None).unwrap();
        let a = q.submit("a", TextKind::Query).unwrap();
        while q.depth() > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (b, c) = (
            q.submit("b", TextKind::Query).unwrap(),
            q.submit("c", TextKind::Query).unwrap(),
        );
        a.wait_blocking().unwrap();
        let mut tickets = vec![b, c];
        if ask_again {
            tickets.push(q.submit("d", TextKind::Query).unwrap());
        }
        for t in tickets {
            t.wait_blocking().unwrap();
        }
        q.shutdown();
        fake.calls()
    }

    #[test]
    fn after_a_batch_the_worker_holds_for_the_callers_it_answered() {
        // In the system when "a" ended: "b" and "c" waiting, and "a"'s
        // caller, who asks again at once.
        assert_eq!(closed_loop(1000, true), [vec!["a"], vec!["b", "c", "d"]]);
        // Without the hold the worker takes what waits, and the load splits.
        assert_eq!(closed_loop(0, true), [vec!["a"], vec!["b", "c"], vec!["d"]]);
    }

    #[test]
    fn a_hold_ends_at_its_deadline() {
        // "a"'s caller never asks again: "b" and "c" go when the hold runs
        // out instead of waiting for company forever.
        assert_eq!(closed_loop(1000, false), [vec!["a"], vec!["b", "c"]]);
    }

    #[test]
    fn one_bad_text_fails_only_its_own_request() {
        let (fake, entered, open) = Fake::gated();
        let q = EmbedQueue::start(fake.clone(), BatchSettings::default(), None).unwrap();
        let first = q.submit("gate", TextKind::Query).unwrap();
        entered.recv().unwrap();
        let words = ["good one", "BAD one", "PANIC one", "good two"];
        let tickets: Vec<Ticket> = words
            .iter()
            .map(|w| q.submit(*w, TextKind::Query).unwrap())
            .collect();
        open.send(()).unwrap();
        first.wait_blocking().unwrap();
        let results: Vec<_> = tickets.into_iter().map(Ticket::wait_blocking).collect();
        assert_eq!(results[0].as_ref().unwrap().vector, vector_of("good one"));
        assert!(
            matches!(results[1], Err(QueueError::Embed(EmbedError::Tokenize(_)))),
            "{:?}",
            results[1]
        );
        assert!(
            matches!(results[2], Err(QueueError::Failed(_))),
            "{:?}",
            results[2]
        );
        assert_eq!(results[3].as_ref().unwrap().vector, vector_of("good two"));
        // The worker survived the panic.
        assert!(q.is_alive());
        let after = q.submit("still here", TextKind::Query).unwrap();
        assert_eq!(
            after.wait_blocking().unwrap().vector,
            vector_of("still here")
        );
        q.shutdown();
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let (fake, entered, open) = Fake::gated();
        let q = EmbedQueue::start(
            fake,
            BatchSettings {
                capacity: 2,
                batch_tokens: 1000,
                ..BatchSettings::default()
            },
            None,
        )
        .unwrap();
        let first = q.submit("gate", TextKind::Query).unwrap();
        entered.recv().unwrap();
        let a = q.submit("a", TextKind::Query).unwrap();
        let b = q.submit("b", TextKind::Query).unwrap();
        assert!(matches!(
            q.submit("c", TextKind::Query),
            Err(QueueError::Full { capacity: 2 })
        ));
        open.send(()).unwrap();
        for t in [first, a, b] {
            t.wait_blocking().unwrap();
        }
        q.submit("d", TextKind::Query)
            .unwrap()
            .wait_blocking()
            .unwrap();
        q.shutdown();
    }

    #[test]
    fn dropping_the_queue_ends_the_worker_and_fails_what_waits() {
        let (fake, entered, open) = Fake::gated();
        let q = EmbedQueue::start(fake.clone(), BatchSettings::default(), None).unwrap();
        let first = q.submit("gate", TextKind::Query).unwrap();
        entered.recv().unwrap();
        let waiting = q.submit("never embedded", TextKind::Query).unwrap();
        let shared = q.shared.clone();
        let worker = {
            let mut q = q;
            let w = q.worker.take().unwrap();
            drop(q);
            w
        };
        open.send(()).unwrap();
        worker.join().unwrap();
        // The batch in hand is answered; what still waited is failed.
        assert!(first.wait_blocking().is_ok());
        assert!(matches!(waiting.wait_blocking(), Err(QueueError::Stopped)));
        assert!(!shared.lock().alive);
        // The worker let go of the model.
        assert_eq!(Arc::strong_count(&fake), 1);
    }

    #[test]
    fn a_dead_worker_fails_requests_instead_of_hanging() {
        let fake = Fake::new();
        let q = EmbedQueue::start(fake, BatchSettings::default(), None).unwrap();
        // Simulate the thread ending on its own.
        q.shared.lock().alive = false;
        assert!(matches!(
            q.submit("x", TextKind::Query),
            Err(QueueError::Stopped)
        ));
        q.shutdown();
    }
}
