//! `ptm`: the command-line face of the ptm library. One module per subcommand; errors are
//! printed with their causes and exit with status 1 (usage errors: 2, from clap).

mod cmd;
mod input;
mod output;
mod train_config;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ptm",
    version,
    about = "Pretrained Transformer language models: embed, fill masks, generate, pretrain, inspect, convert"
)]
struct Cli {
    /// Worker threads for tensor maths (default: all cores; also RAYON_NUM_THREADS), at most
    /// 4 × the cores (and 1024).
    #[arg(long, global = true, value_parser = parse_threads)]
    threads: Option<usize>,
    /// More log output (-v: info, -vv: debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Embed(cmd::embed::Args),
    Similarity(cmd::similarity::Args),
    FillMask(cmd::fill_mask::Args),
    Generate(cmd::generate::Args),
    Perplexity(cmd::perplexity::Args),
    Pretrain(cmd::pretrain::Args),
    Finetune(cmd::finetune::Args),
    Eval(cmd::eval::Args),
    Predict(cmd::predict::Args),
    Plot(cmd::plot::Args),
    /// Tokenizers: train one on a corpus.
    #[command(subcommand)]
    Tokenizer(cmd::tokenizer::Command),
    Info(cmd::info::Args),
    Convert(cmd::convert::Args),
    Quantize(cmd::quantize::Args),
    Bench(cmd::bench::Args),
}

fn main() {
    keep_freed_memory();
    let cli = match train_config::expand(std::env::args_os().collect(), &Cli::command()) {
        Ok(argv) => Cli::parse_from(argv),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    };
    let threads = match cli.threads.map_or_else(threads_from_env, |n| Ok(Some(n))) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if let Some(n) = threads {
        // Read by candle's GEMM for its share of the pool.
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
    if let Err(e) = start_thread_pool(threads) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    // Under mpirun (the `mpi` feature) this process is one rank of a data-parallel run; the
    // universe finalises MPI when a successful run ends.
    #[cfg(feature = "mpi")]
    let mpi = match ptm::train::distributed::MpiWorld::init() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    };
    #[cfg(feature = "mpi")]
    let world = mpi
        .as_ref()
        .map(|(_, w)| *w as &'static dyn ptm::train::distributed::Collective);
    #[cfg(not(feature = "mpi"))]
    let world: Option<&'static dyn ptm::train::distributed::Collective> = None;
    cmd::train_options::set_world(world);
    // Ranks other than 0 report only errors.
    init_logging(
        cli.verbose,
        cli.quiet || world.is_some_and(|w| w.rank() > 0),
    );
    let result = match cli.command {
        Command::Embed(a) => cmd::embed::run(a),
        Command::Similarity(a) => cmd::similarity::run(a),
        Command::FillMask(a) => cmd::fill_mask::run(a),
        Command::Generate(a) => cmd::generate::run(a),
        Command::Perplexity(a) => cmd::perplexity::run(a),
        Command::Pretrain(a) => cmd::pretrain::run(a),
        Command::Finetune(a) => cmd::finetune::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Predict(a) => cmd::predict::run(a),
        Command::Plot(a) => cmd::plot::run(a),
        Command::Tokenizer(c) => cmd::tokenizer::run(c),
        Command::Info(a) => cmd::info::run(a),
        Command::Convert(a) => cmd::convert::run(a),
        Command::Quantize(a) => cmd::quantize::run(a),
        Command::Bench(a) => cmd::bench::run(a),
    };
    if let Err(e) = result {
        match world {
            // Exiting without finalising MPI makes mpirun end the other ranks at once.
            Some(w) => eprintln!("error: rank {} of {}: {e:#}", w.rank(), w.size()),
            None => eprintln!("error: {e:#}"),
        }
        std::process::exit(1);
    }
    #[cfg(feature = "mpi")]
    drop(mpi);
}

/// `--threads`: 1 to 4 × the cores, at most 1024. Each thread reserves a stack, and ten
/// thousand of them made a two-line `embed` take minutes, or panic under a memory cap.
fn parse_threads(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let max = cores.saturating_mul(4).min(1024);
    if n == 0 || n > max {
        return Err(format!(
            "must be in 1..={max} (4 × the {cores} cores, at most 1024)"
        ));
    }
    Ok(n)
}

/// RAYON_NUM_THREADS, held to the bound of `--threads` (0 and non-numbers: rayon's default).
fn threads_from_env() -> Result<Option<usize>, String> {
    match std::env::var("RAYON_NUM_THREADS").map(|v| v.trim().parse::<usize>()) {
        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => Ok(None),
        Ok(Ok(n)) => parse_threads(&n.to_string())
            .map(Some)
            .map_err(|e| format!("RAYON_NUM_THREADS={n}: {e}")),
    }
}

/// Starts rayon's global pool now, so a pool that cannot start (no memory for the threads'
/// stacks, a process limit) is an error here rather than a panic in the first tensor op.
fn start_thread_pool(threads: Option<usize>) -> anyhow::Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .build_global()
        .map_err(|e| anyhow::anyhow!("cannot start the worker threads: {e}"))
}

/// Tensor code allocates and frees buffers of megabytes at every op. glibc hands blocks that
/// large back to the kernel on free (mmap/munmap), so each new tensor page-faults its memory in
/// again: a quarter of a training step's time went to the kernel. Serving them from the heap
/// instead, and keeping freed memory, made the small BERT training step 1.7x faster.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_bounded_by_the_cores() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let max = (4 * cores).min(1024);
        assert_eq!(parse_threads(&max.to_string()), Ok(max));
        for bad in ["0", "1025", &(max + 1).to_string(), "-1", "many"] {
            assert!(parse_threads(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_pool_that_cannot_start_is_an_error() {
        // The global pool starts once; a second start fails as a spawn failure would.
        let _ = start_thread_pool(Some(1));
        let err = start_thread_pool(Some(1)).unwrap_err().to_string();
        assert!(
            err.starts_with("cannot start the worker threads: "),
            "{err}"
        );
    }
}
