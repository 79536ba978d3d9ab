//! Data-parallel training under `mpirun` (the `mpi` feature; Open MPI over shared memory on this
//! machine): 2 processes × batch B train and evaluate as 1 process × batch 2B, a 2-process run
//! resumes exactly (and with 1 process, regrouped), and a failing or diverging rank ends the
//! whole job with its rank and cause.
#![cfg(feature = "mpi")]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{data, fixtures, ptm};

fn mpirun_command() -> Command {
    let mut c = Command::new("mpirun");
    c.args(["-np", "2", "--oversubscribe", "--mca", "btl", "self,vader"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    c
}

/// `mpirun -np 2 ptm ARGS`, loopback only (shared memory between local processes).
fn mpirun(args: &[&str]) -> Output {
    mpirun_command()
        .arg(env!("CARGO_BIN_EXE_ptm"))
        .args(args)
        .args(["--threads", "1"])
        .output()
        .unwrap()
}

/// `mpirun -np 2 sh -c SCRIPT`: a command line per rank ($OMPI_COMM_WORLD_RANK).
fn mpirun_sh(script: &str) -> Output {
    mpirun_command()
        .args(["sh", "-c", script])
        .output()
        .unwrap()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn succeeded(o: &Output) {
    assert!(
        o.status.success(),
        "status {:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

fn losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("train_log.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64())
        .collect()
}

/// Every weight of two saved models within 1e-5 relative to the tensor's largest entry. Only for
/// runs that do the same float operations: 2 processes x B against 1 process x B with 2
/// accumulated micro-batches on one thread each (each micro-batch's forward and backward is the
/// same, and the all-reduce of two ranks adds the same two gradients as accumulation does, a
/// commutative sum), or a resumed run against an uninterrupted one. Against 1 x 2B the sums run
/// in another order: Adam divides each gradient by its own running size, so a last-bit
/// difference in a gradient that is nearly zero (the attention key biases, which softmax
/// ignores; rarely seen embedding rows) becomes a visible weight difference, by an amount that
/// depends on the CPU's kernels. There the losses and evaluations are compared instead.
fn same_weights(a: &Path, b: &Path) {
    let load = |d: &Path| {
        candle_core::safetensors::load(d.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap()
    };
    let (wa, wb) = (load(a), load(b));
    assert_eq!(wa.len(), wb.len());
    for (name, x) in &wa {
        let y = &wb[name];
        let scale = x
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .max(1e-6);
        let diff = (x - y)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            diff <= 1e-5 * scale,
            "{name}: differs by {diff} (largest entry {scale})"
        );
    }
}

/// Evaluation records as (step, metrics).
type Evals = Vec<(u64, serde_json::Map<String, serde_json::Value>)>;

/// The evaluation records of a run's log.
fn evals(out: &Path) -> Evals {
    std::fs::read_to_string(out.join("train_log.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut v: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(l).unwrap();
            let step = v.remove("step")?.as_u64()?;
            (!v.contains_key("loss")).then_some((step, v))
        })
        .collect()
}

/// The same evaluations at the same steps, every metric within 1e-5 relative.
fn assert_same_evals(ea: &Evals, eb: &Evals) {
    assert!(!eb.is_empty());
    assert_eq!(
        ea.iter().map(|e| e.0).collect::<Vec<_>>(),
        eb.iter().map(|e| e.0).collect::<Vec<_>>()
    );
    for ((step, x), (_, y)) in ea.iter().zip(eb) {
        assert_eq!(
            x.keys().collect::<Vec<_>>(),
            y.keys().collect::<Vec<_>>(),
            "step {step}"
        );
        for (name, v) in x {
            let (v, w) = (v.as_f64().unwrap(), y[name].as_f64().unwrap());
            assert!(
                (v - w).abs() <= 1e-5 * w.abs().max(1e-3),
                "step {step} {name}: {v} vs {w}"
            );
        }
    }
}

fn assert_same_losses(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * y.abs(),
            "step {}: {x} vs {y}",
            i + 1
        );
    }
}

/// One process doing what each of 2 ranks does, one thread, twice: 2 accumulated micro-batches.
fn accumulate_on_one_thread(mut args: Vec<String>) -> Vec<String> {
    args.extend(["--grad-accum", "2", "--threads", "1"].map(String::from));
    args
}

/// The tiny BERT of the embedded default without dropout (its draws depend on the batch shape).
fn no_dropout_config(dir: &Path) -> String {
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("tiny-bert.json")).unwrap()).unwrap();
    c["hidden_dropout_prob"] = 0.0.into();
    c["attention_probs_dropout_prob"] = 0.0.into();
    let path = dir.join("config.json");
    std::fs::write(&path, c.to_string()).unwrap();
    path.display().to_string()
}

#[test]
fn two_processes_pretrain_as_one_with_twice_the_batch_and_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let config = no_dropout_config(dir.path());
    let text = std::fs::read_to_string(data("austen/persuasion.txt")).unwrap();
    let (corpus, held_out) = (
        dir.path().join("corpus.txt"),
        dir.path().join("held-out.txt"),
    );
    std::fs::write(&corpus, &text[..40_000]).unwrap();
    std::fs::write(&held_out, &text[40_000..46_000]).unwrap();
    let (corpus, held_out) = (corpus.display().to_string(), held_out.display().to_string());
    let tokenizer = data("tokenizer");
    // The held-out loss in batches of 4 every 2 steps, split between the processes of a run.
    let args = |out: &Path, batch: &'static str, steps: &'static str| -> Vec<String> {
        [
            "pretrain",
            "--config",
            &config,
            "--tokenizer",
            &tokenizer,
            "--train",
            &corpus,
            "--eval",
            &held_out,
            "--output",
            out.to_str().unwrap(),
            "--max-steps",
            steps,
            "--batch-size",
            batch,
            "--seq-len",
            "32",
            "--lr",
            "1e-3",
            "--warmup-steps",
            "2",
            "--log-every",
            "1",
            "--save-every",
            "3",
            "--eval-every",
            "2",
            "--eval-batch-size",
            "4",
            "-q",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run1 = |v: Vec<String>| ptm(&strs(&v));
    let run2 = |v: Vec<String>| mpirun(&strs(&v));

    let one = dir.path().join("one");
    succeeded(&run1(args(&one, "8", "6")));
    let two = dir.path().join("two");
    succeeded(&run2(args(&two, "4", "6")));
    assert_same_losses(&losses(&two), &losses(&one));
    let accumulated = dir.path().join("accumulated");
    succeeded(&run1(accumulate_on_one_thread(args(
        &accumulated,
        "4",
        "6",
    ))));
    assert_same_losses(&losses(&two), &losses(&accumulated));
    same_weights(&two, &accumulated);
    assert!(
        !losses(&one).windows(2).all(|w| w[0] == w[1]),
        "the loss moves"
    );
    assert_eq!(
        evals(&one).iter().map(|e| e.0).collect::<Vec<_>>(),
        [0, 2, 4, 6]
    );
    assert_same_evals(&evals(&two), &evals(&one));

    // Stopped after a checkpoint and resumed with 2 processes: the uninterrupted curve.
    let part = dir.path().join("part");
    succeeded(&run2(args(&part, "4", "3")));
    let checkpoint = part.join("checkpoint-3").display().to_string();

    // The same checkpoint resumed by 1 process: it says what changes, and from step 4 each
    // step takes the next 4 examples instead of 8.
    let regrouped = dir.path().join("regrouped");
    let mut alone: Vec<String> = args(&regrouped, "4", "6")
        .into_iter()
        .filter(|a| a != "-q")
        .collect();
    alone.extend(["--resume".to_string(), checkpoint.clone()]);
    let o = run1(alone);
    succeeded(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("resuming a run of 2 processes with 1")
            && err.contains("4 examples instead of 8"),
        "{err}"
    );
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(regrouped.join("checkpoint-6/trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (state["global_step"].as_u64(), state["world_size"].as_u64()),
        (Some(6), Some(1))
    );
    assert_eq!(
        state["epoch_position"].as_u64(),
        Some(3 * 8 + 3 * 4),
        "{state}"
    );
    assert_eq!(losses(&regrouped).len(), 3);

    let mut resumed = args(&part, "4", "6");
    resumed.extend(["--resume".to_string(), checkpoint]);
    succeeded(&run2(resumed));
    assert_same_losses(&losses(&part), &losses(&two));
    same_weights(&part, &two);
    // The part run also evaluated where it stopped, at step 3.
    let part_evals: Evals = evals(&part).into_iter().filter(|e| e.0 != 3).collect();
    assert_same_evals(&part_evals, &evals(&two));
}

#[test]
fn two_processes_fine_tune_as_one_with_twice_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    // The tiny BERT fixture with its dropout off.
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(fixtures().join("bert/tiny-mlm").join(f), model.join(f)).unwrap();
    }
    let mut c: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("bert/tiny-mlm/config.json")).unwrap(),
    )
    .unwrap();
    c["hidden_dropout_prob"] = 0.0.into();
    c["attention_probs_dropout_prob"] = 0.0.into();
    std::fs::write(model.join("config.json"), c.to_string()).unwrap();
    let texts = [
        ("the cat sat on the mat", "cat"),
        ("paris is the capital of france", "city"),
        ("a big dog", "cat"),
        ("the city of paris", "city"),
    ];
    let rows: String = (0..32)
        .map(|i| {
            format!(
                "{}\n",
                serde_json::json!({"text": texts[i % 4].0, "label": texts[i % 4].1})
            )
        })
        .collect();
    let train = dir.path().join("train.jsonl");
    std::fs::write(&train, rows).unwrap();
    let args = |out: &Path, batch: &'static str| -> Vec<String> {
        [
            "finetune",
            "--task",
            "seq-cls",
            "--model",
            model.to_str().unwrap(),
            "--train",
            train.to_str().unwrap(),
            "--eval",
            train.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--epochs",
            "2",
            "--batch-size",
            batch,
            "--eval-batch-size",
            "8",
            "--lr",
            "1e-3",
            "-q",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let one = dir.path().join("one");
    succeeded(&ptm(&strs(&args(&one, "8"))));
    let two = dir.path().join("two");
    let o = mpirun(&strs(&args(&two, "4")));
    succeeded(&o);
    assert_same_losses(&losses(&two), &losses(&one));
    assert_same_evals(&evals(&two), &evals(&one));
    let accumulated = dir.path().join("accumulated");
    succeeded(&ptm(&strs(&accumulate_on_one_thread(args(
        &accumulated,
        "4",
    )))));
    assert_same_losses(&losses(&two), &losses(&accumulated));
    same_weights(&two, &accumulated);
    // Rank 0 alone printed the kept model's evaluation.
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).lines().count(),
        1,
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// Rank 1 cannot read its training file: the job ends at once, naming the rank and the file,
/// instead of rank 0 waiting for it forever.
#[test]
fn a_failing_rank_ends_the_job_with_its_rank_and_cause() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let started = std::time::Instant::now();
    let o = mpirun_sh(&format!(
        "if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then t=/nonexistent/shard.txt; else t={}; fi; exec {} pretrain --config {} --tokenizer {} --train $t --output {} --max-steps 50 --batch-size 4 --seq-len 32 -q --threads 1",
        data("austen/persuasion.txt"),
        env!("CARGO_BIN_EXE_ptm"),
        data("tiny-bert.json"),
        data("tokenizer"),
        out.display()
    ));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("rank 1 of 2") && err.contains("/nonexistent/shard.txt"),
        "{err}"
    );
    assert!(
        started.elapsed().as_secs() < 60,
        "the job took {:?}",
        started.elapsed()
    );
}

/// Rank 1 diverges (its optimizer steps with a learning rate of 1e30), so its loss turns NaN:
/// the job ends at once naming the rank, and the last checkpoint still resumes.
#[test]
fn a_nan_on_one_rank_ends_the_job_and_the_last_checkpoint_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let train = |lr_of_rank_1: &str, steps: usize, resume: &str| {
        mpirun_sh(&format!(
            "lr=1e-3; if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then lr={lr_of_rank_1}; fi; exec {} pretrain --config {} --tokenizer {} --train {} --output {} --max-steps {steps} --batch-size 4 --seq-len 32 --lr $lr --warmup-steps 2 --save-every 2 --log-every 1 -q --threads 1 {resume}",
            env!("CARGO_BIN_EXE_ptm"),
            data("tiny-bert.json"),
            data("tokenizer"),
            data("austen/persuasion.txt"),
            out.display()
        ))
    };
    let started = std::time::Instant::now();
    // The warm-up gives step 1 a rate of 0 and step 2 half the peak: step 2 moves rank 1's
    // weights by about 5e29 (after rank 0 saved nothing yet, and rank 0's own step is sane);
    // step 3 overflows there.
    let o = train("1e30", 6, "");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("rank 1 of 2")
            && (err.contains("the loss is") || err.contains("the gradient norm is")),
        "{err}"
    );
    assert!(
        started.elapsed().as_secs() < 60,
        "the job took {:?}",
        started.elapsed()
    );
    // Rank 0 saved after step 2 (every 2 steps) and nothing after: it never finished step 4.
    let checkpoints: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint"))
        .collect();
    assert_eq!(checkpoints, ["checkpoint-2"]);
    // Resumed with the settings rank 0 recorded on both ranks, the run goes on.
    let resume = format!("--resume {}", out.join("checkpoint-2").display());
    succeeded(&train("1e-3", 4, &resume));
    assert_eq!(losses(&out).len(), 4);
}
