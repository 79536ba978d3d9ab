//! `ptm plot OUTPUT`: the loss and learning-rate curves of a training run, from its
//! `train_log.jsonl`, as a PNG.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use plotters::prelude::*;

/// Draw a training run's loss and learning rate.
#[derive(clap::Args)]
pub struct Args {
    /// A training output directory (holding train_log.jsonl) or the log file itself.
    run: PathBuf,
    /// The image to write (default: train_plot.png beside the log).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// What the log holds: (step, value) series.
#[derive(Default)]
struct Curves {
    loss: Vec<(f64, f64)>,
    lr: Vec<(f64, f64)>,
    eval_loss: Vec<(f64, f64)>,
}

pub fn run(a: Args) -> Result<()> {
    let log = if a.run.is_dir() { a.run.join(ptm::train::TRAIN_LOG) } else { a.run.clone() };
    let curves = read_log(&log)?;
    let output = a.output.unwrap_or_else(|| log.with_file_name("train_plot.png"));
    draw(&curves, &output).with_context(|| format!("cannot draw {}", output.display()))?;
    println!("{}", output.display());
    Ok(())
}

fn read_log(path: &Path) -> Result<Curves> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut c = Curves::default();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}:{}: invalid JSON", path.display(), i + 1))?;
        let Some(step) = v.get("step").and_then(serde_json::Value::as_f64) else {
            bail!("{}:{}: no \"step\"", path.display(), i + 1);
        };
        let take = |key: &str, series: &mut Vec<(f64, f64)>| {
            if let Some(x) = v.get(key).and_then(serde_json::Value::as_f64).filter(|x| x.is_finite()) {
                series.push((step, x));
            }
        };
        take("loss", &mut c.loss);
        take("lr", &mut c.lr);
        take("eval_loss", &mut c.eval_loss);
    }
    if c.loss.is_empty() {
        bail!("{}: no training loss to plot", path.display());
    }
    Ok(c)
}

fn draw(c: &Curves, output: &Path) -> Result<()> {
    // plotters draws text with a font it is given; DejaVu is embedded so no system font is needed.
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| anyhow::anyhow!("the embedded font did not load"))?;
    // Drawn under a temp name, renamed when complete; the backend picks PNG from the extension.
    let name = output.file_name().unwrap_or_default().to_string_lossy();
    let tmp = output.with_file_name(format!(".{name}.tmp.png"));
    {
        let root = BitMapBackend::new(&tmp, (1000, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(560);
        let max_step = c.loss.iter().chain(&c.eval_loss).map(|p| p.0).fold(1.0, f64::max);
        let all_loss = c.loss.iter().chain(&c.eval_loss).map(|p| p.1);
        let (lo, hi) = all_loss.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)));
        let pad = ((hi - lo) * 0.05).max(1e-3);
        let mut chart = ChartBuilder::on(&left)
            .caption("loss", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..max_step, (lo - pad)..(hi + pad))?;
        chart.configure_mesh().x_desc("step").light_line_style(WHITE.mix(0.0)).draw()?;
        chart.draw_series(LineSeries::new(c.loss.iter().copied(), &BLUE))?.label("train").legend(|(x, y)| {
            PathElement::new([(x, y), (x + 18, y)], BLUE)
        });
        if !c.eval_loss.is_empty() {
            chart
                .draw_series(c.eval_loss.iter().map(|&p| Circle::new(p, 4, RED.filled())))?
                .label("held-out")
                .legend(|(x, y)| Circle::new((x + 9, y), 4, RED.filled()));
        }
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;

        let lr_max = c.lr.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-12);
        let mut chart = ChartBuilder::on(&right)
            .caption("learning rate", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..max_step, 0f64..lr_max * 1.05)?;
        chart.configure_mesh().x_desc("step").y_label_formatter(&|y| format!("{y:.1e}")).light_line_style(WHITE.mix(0.0)).draw()?;
        chart.draw_series(LineSeries::new(c.lr.iter().copied(), &GREEN))?;
        root.present()?;
    }
    std::fs::rename(&tmp, output).with_context(|| format!("cannot write {}", output.display()))?;
    Ok(())
}
