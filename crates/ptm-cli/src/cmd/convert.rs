//! `ptm convert`: re-save a checkpoint in the Hugging Face layout that transformers loads:
//! config.json, model.safetensors (from safetensors, shards or pytorch_model.bin, legacy
//! names fixed), the tokenizer files, generation_config.json and any sentence-transformers files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ptm::generate::GENERATION_CONFIG;
use ptm::models::{load_architecture, save_pretrained};
use ptm::nn::StoreOptions;
use ptm::sentence_transformers::{MODULES_JSON, ModelDir, SENTENCE_BERT_CONFIG};

/// Re-save a model directory as config.json + model.safetensors + tokenizer files.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub paths: Paths,
}

/// The model read and the directory written (convert, quantize).
#[derive(clap::Args)]
pub struct Paths {
    /// Model directory, or org/name in the Hugging Face cache.
    #[arg(long)]
    pub model: String,
    /// Output directory (created; files in it are replaced atomically).
    #[arg(long)]
    pub output: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    save(&a.paths, &StoreOptions::default())
}

/// Loads `model` with `opts` (whose precision decides how linear weights are written) and
/// saves it under `output` with its tokenizer and sentence-transformers files.
pub fn save(paths: &Paths, opts: &StoreOptions) -> Result<()> {
    let (model, output) = (paths.model.as_str(), paths.output.as_path());
    let ModelDir {
        root: dir,
        sentence_transformers: st,
        pretrained,
    } = ModelDir::open(model)?;
    if same_dir(&dir, output) {
        bail!("--output must differ from the model directory");
    }
    let (arch, store) = load_architecture(&pretrained, opts)
        .with_context(|| format!("loading {}", pretrained.dir.display()))?;
    let tokenizer = pretrained.tokenizer().ok();
    let out_model = match &st {
        Some(s) => output.join(
            s.transformer_dir
                .strip_prefix(&dir)
                .unwrap_or(Path::new("")),
        ),
        None => output.to_path_buf(),
    };
    save_pretrained(
        &out_model,
        &pretrained.config,
        &arch,
        &store,
        tokenizer.as_ref(),
    )?;
    copy_if_present(
        &pretrained.dir.join(GENERATION_CONFIG),
        &out_model.join(GENERATION_CONFIG),
    )?;
    if st.is_some() {
        copy_sentence_transformers_files(&dir, output)?;
    }
    let int8 = store.int8_linear_weights().len();
    let how = if int8 > 0 {
        format!(", {int8} linear weights in int8")
    } else {
        String::new()
    };
    eprintln!(
        "saved {arch} ({} parameters{how}) to {}",
        store.num_parameters(),
        output.display()
    );
    Ok(())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// The small JSON files that make a directory a sentence-transformers model.
fn copy_sentence_transformers_files(from: &Path, to: &Path) -> Result<()> {
    let mut files = vec![
        PathBuf::from(MODULES_JSON),
        PathBuf::from(SENTENCE_BERT_CONFIG),
    ];
    for entry in std::fs::read_dir(from)?.flatten() {
        let name = entry.file_name();
        if name
            .to_string_lossy()
            .starts_with("config_sentence_transformers")
        {
            files.push(PathBuf::from(name));
        } else if entry.path().join("config.json").is_file()
            && name.to_string_lossy().contains("Pooling")
        {
            files.push(PathBuf::from(name).join("config.json"));
        }
    }
    for f in files {
        copy_if_present(&from.join(&f), &to.join(&f))?;
    }
    Ok(())
}

fn copy_if_present(src: &Path, dst: &Path) -> Result<()> {
    if src.is_file() {
        ptm::io::create_dir_all(dst.parent().unwrap_or(Path::new(".")))?;
        let bytes = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
        ptm::io::write_atomic(dst, &bytes)?;
    }
    Ok(())
}
