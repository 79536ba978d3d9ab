//! `ptm plot RUN...`: curves from training runs' `train_log.jsonl` as a PNG: one run's loss
//! (training and held-out) and learning rate, or one evaluation metric of several runs side by
//! side (a learning-curve comparison).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use plotters::prelude::*;

/// Draw training curves.
#[derive(clap::Args)]
pub struct Args {
    /// Training output directories (holding train_log.jsonl) or the log files themselves.
    #[arg(required = true, num_args = 1..)]
    runs: Vec<PathBuf>,
    /// Plot this evaluation metric (e.g. accuracy, eval_loss) of every run instead of one run's
    /// loss and learning rate.
    #[arg(long)]
    metric: Option<String>,
    /// The image to write (default: train_plot.png beside the first log).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// What a log holds: (step, value) series.
#[derive(Default)]
struct Curves {
    loss: Vec<(f64, f64)>,
    lr: Vec<(f64, f64)>,
    /// Evaluation metrics by name.
    evals: std::collections::BTreeMap<String, Vec<(f64, f64)>>,
}

pub fn run(a: Args) -> Result<()> {
    let logs: Vec<PathBuf> = a
        .runs
        .iter()
        .map(|r| {
            if r.is_dir() {
                r.join(ptm::train::TRAIN_LOG)
            } else {
                r.clone()
            }
        })
        .collect();
    let output = a
        .output
        .clone()
        .unwrap_or_else(|| logs[0].with_file_name("train_plot.png"));
    let drawn = match &a.metric {
        None if logs.len() > 1 => {
            bail!("several runs are compared on one metric: give --metric NAME")
        }
        None => draw(&read_log(&logs[0])?, &output),
        Some(metric) => {
            let mut series = Vec::new();
            for (run, log) in a.runs.iter().zip(&logs) {
                let curves = read_log(log)?;
                let points = curves.evals.get(metric).cloned().with_context(|| {
                    let names: Vec<&String> = curves.evals.keys().collect();
                    format!(
                        "{}: no evaluation metric {metric:?} (it has {names:?})",
                        log.display()
                    )
                })?;
                let name = run.file_name().map_or_else(
                    || run.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                series.push((name, points));
            }
            draw_metric(metric, &series, &output)
        }
    };
    drawn.with_context(|| format!("cannot draw {}", output.display()))?;
    println!("{}", output.display());
    Ok(())
}

fn read_log(path: &Path) -> Result<Curves> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut c = Curves::default();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: invalid JSON", path.display(), i + 1))?;
        let Some(step) = v.get("step").and_then(serde_json::Value::as_f64) else {
            bail!("{}:{}: no \"step\"", path.display(), i + 1);
        };
        let value = |key: &str| {
            v.get(key)
                .and_then(serde_json::Value::as_f64)
                .filter(|x| x.is_finite())
        };
        if let Some(loss) = value("loss") {
            c.loss.push((step, loss));
            c.lr.extend(value("lr").map(|lr| (step, lr)));
        } else if let serde_json::Value::Object(fields) = &v {
            // An evaluation record: every number but the step is a metric.
            for (k, x) in fields.iter().filter(|(k, _)| *k != "step") {
                if let Some(x) = x.as_f64().filter(|x| x.is_finite()) {
                    c.evals.entry(k.clone()).or_default().push((step, x));
                }
            }
        }
    }
    Ok(c)
}

/// Draws into `output` through a temp file renamed when complete (the backend picks PNG
/// from the extension).
fn render(
    output: &Path,
    size: (u32, u32),
    paint: impl FnOnce(DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    // plotters draws text with a font it is given; DejaVu is embedded so no system font is needed.
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| anyhow::anyhow!("the embedded font did not load"))?;
    let name = output.file_name().unwrap_or_default().to_string_lossy();
    let tmp = output.with_file_name(format!(".{name}.tmp.png"));
    let root = BitMapBackend::new(&tmp, size).into_drawing_area();
    root.fill(&WHITE)?;
    paint(root.clone())?;
    root.present()?;
    drop(root);
    std::fs::rename(&tmp, output).with_context(|| format!("cannot write {}", output.display()))?;
    Ok(())
}

/// One metric of several runs against the step.
fn draw_metric(metric: &str, series: &[(String, Vec<(f64, f64)>)], output: &Path) -> Result<()> {
    let points = || series.iter().flat_map(|(_, p)| p.iter());
    let max_step = points().map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let pad = ((hi - lo) * 0.05).max(1e-3);
    render(output, (800, 480), |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(metric, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..max_step, (lo - pad)..(hi + pad))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (i, (name, p)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(
                    LineSeries::new(p.iter().copied(), color.stroke_width(2)).point_size(3),
                )?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
        Ok(())
    })
}

/// One run's training and held-out loss, and its learning rate.
fn draw(c: &Curves, output: &Path) -> Result<()> {
    if c.loss.is_empty() {
        bail!("no training loss to plot");
    }
    let eval_loss = c.evals.get("eval_loss").cloned().unwrap_or_default();
    render(output, (1000, 420), |root| {
        let (left, right) = root.split_horizontally(560);
        let max_step = c
            .loss
            .iter()
            .chain(&eval_loss)
            .map(|p| p.0)
            .fold(1.0, f64::max);
        let all_loss = c.loss.iter().chain(&eval_loss).map(|p| p.1);
        let (lo, hi) = all_loss.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
            (lo.min(y), hi.max(y))
        });
        let pad = ((hi - lo) * 0.05).max(1e-3);
        let mut chart = ChartBuilder::on(&left)
            .caption("loss", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..max_step, (lo - pad)..(hi + pad))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        chart
            .draw_series(LineSeries::new(c.loss.iter().copied(), &BLUE))?
            .label("train")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLUE));
        if !eval_loss.is_empty() {
            chart
                .draw_series(eval_loss.iter().map(|&p| Circle::new(p, 4, RED.filled())))?
                .label("held-out")
                .legend(|(x, y)| Circle::new((x + 9, y), 4, RED.filled()));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;

        let lr_max = c.lr.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-12);
        let mut chart = ChartBuilder::on(&right)
            .caption("learning rate", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..max_step, 0f64..lr_max * 1.05)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_label_formatter(&|y| format!("{y:.1e}"))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        chart.draw_series(LineSeries::new(c.lr.iter().copied(), &GREEN))?;
        Ok(())
    })
}
