//! Pictures of a run, from its `metrics.jsonl` alone, each as PNG and SVG:
//!
//! - `curves`: training and validation loss, and the validation metric, per epoch;
//! - `experts`: expert usage per layer (mean routing weight, layers × experts) of the evaluated
//!   adapter, with the routing entropy per layer; for pMoE, the dispatcher weights of each
//!   expert at each prompted layer over the sources (every expert's EPTs, the carried prompt);
//! - `routing_per_class`: mean routing weight per class and expert at the last routing site;
//!   for pMoE, each expert's sources per class, averaged over its prompted layers.
//!
//! Text is drawn with DejaVu Sans, embedded in the binary (the `dejavu` crate), so that no system
//! font is needed and the pictures are the same on every machine; `$MOPE_FONT` names another
//! TrueType font.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::evaluation::{EvalReport, LayerRouting};
use crate::objective::Objective;
use crate::run_dir::RunTask;

/// Environment variable naming a TrueType font for plots.
pub const FONT_ENV: &str = "MOPE_FONT";

/// Registers the plot font once per process.
fn register_font() -> Result<()> {
    static FONT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| match std::env::var_os(FONT_ENV) {
        Some(path) => {
            let path = PathBuf::from(path);
            let bytes: &'static [u8] =
                Box::leak(std::fs::read(&path).map_err(|e| format!("{FONT_ENV}={}: {e}", path.display()))?.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{FONT_ENV}={}: not a TrueType font", path.display()))
        }
        None => plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "the embedded DejaVu Sans did not load".to_string()),
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// What the plots read from `metrics.jsonl`.
#[derive(Debug, Default)]
pub struct History {
    epochs: Vec<f64>,
    train_loss: Vec<f64>,
    val_loss: Vec<f64>,
    val_metric: Vec<f64>,
    metric: String,
    /// Routing of the evaluated adapter (the test event), else of the last epoch.
    routing: Vec<LayerRouting>,
    routing_source: String,
    /// pMoE: the experts' names (from the run's `config.toml`).
    experts: Vec<String>,
}

impl History {
    /// Row label of a routing site.
    fn site(&self, r: &LayerRouting) -> String {
        match r.expert {
            None => format!("layer {}", r.layer),
            Some(k) => format!("e{k} layer {}", r.layer),
        }
    }

    /// Column labels of a routing site: prompt experts by index, or dispatcher sources (the
    /// experts' EPTs, then the carried prompt).
    fn columns(&self, r: &LayerRouting) -> Vec<String> {
        let n = r.stats.share.len();
        match r.expert {
            None => (0..n).map(|e| e.to_string()).collect(),
            Some(_) => (0..n).map(|j| if j < self.experts.len() { format!("e{j} EPTs") } else { "carried".to_string() }).collect(),
        }
    }

    /// The axis title of a site's columns, with the experts' names for pMoE.
    fn column_axis(&self, r: &LayerRouting) -> String {
        match r.expert {
            None => "expert".to_string(),
            Some(_) => {
                let names: Vec<String> = self.experts.iter().enumerate().map(|(k, n)| format!("e{k} = {}", short(n))).collect();
                format!("source ({})", names.join(", "))
            }
        }
    }
}

/// A name cut to fit a label.
fn short(name: &str) -> String {
    let cut: String = name.chars().take(40).collect();
    if cut.len() < name.len() { format!("{cut}…") } else { cut }
}

/// What `<run>/metrics.jsonl` says of each epoch and of the routing, for `metric`. A last line
/// without its line end (being written, or cut by a kill) is left out.
pub fn read_history(run: &Path, metric: &str) -> Result<History> {
    let path = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    let mut h = History { metric: metric.to_string(), ..History::default() };
    for (i, line) in complete.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let event: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        let report = |key: &str| -> Result<EvalReport> {
            serde_json::from_value(event[key].clone()).with_context(|| format!("{}:{}: `{key}` is not an evaluation report", path.display(), i + 1))
        };
        match event["event"].as_str() {
            Some("epoch") => {
                let val = report("val")?;
                h.epochs.push(event["epoch"].as_f64().unwrap_or(h.epochs.len() as f64 + 1.0));
                h.train_loss.push(event["train_loss"].as_f64().unwrap_or(f64::NAN));
                h.val_loss.push(val.loss);
                h.val_metric.push(val.metric(metric).unwrap_or(f64::NAN));
                if h.routing_source.is_empty() || h.routing_source.starts_with("validation") {
                    h.routing = val.routing;
                    h.routing_source = format!("validation, epoch {}", h.epochs.len());
                }
            }
            Some("test") => {
                h.routing = report("report")?.routing;
                h.routing_source = format!("{} split, best adapter", event["split"].as_str().unwrap_or("test"));
            }
            _ => {}
        }
    }
    if h.epochs.is_empty() {
        bail!("{}: no completed epoch to plot", path.display());
    }
    Ok(h)
}

/// Draws every plot of the run in `run` into `out`; returns the files written.
pub fn plot_run(run: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    register_font()?;
    let task = RunTask::read(run)?;
    let mut history = read_history(run, task.objective.primary_metric())?;
    history.experts = crate::ExperimentSpec::load(&run.join("config.toml"), &[]).map(|s| s.model.experts).unwrap_or_default();
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let mut written = Vec::new();
    written.extend(render(out, "curves", (1000, 420), &Curves(&history))?);
    if history.routing.is_empty() {
        eprintln!("no routing in this run (the method has no experts): routing plots skipped");
        return Ok(written);
    }
    let rows = history.routing.len();
    written.extend(render(out, "experts", (760, 140 + 28 * rows as u32), &Experts(&history))?);
    let classes = if history.experts.is_empty() {
        history.routing.last().map_or(0, |deepest| deepest.per_class.iter().filter(|row| !row.is_empty()).count().min(MAX_CLASS_ROWS))
    } else {
        expert_class_rows(&history, &task.labels).0.len()
    };
    if classes == 0 {
        eprintln!("no per-class routing in this run (segmentation routes per image, not per class): routing_per_class skipped");
        return Ok(written);
    }
    written.extend(render(out, "routing_per_class", (760, 140 + 24 * classes as u32), &PerClass(&history, &task.labels))?);
    Ok(written)
}

/// A picture that can be drawn on any plotters backend.
trait Figure {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static;
}

struct Curves<'a>(&'a History);
struct Experts<'a>(&'a History);
struct PerClass<'a>(&'a History, &'a [String]);

impl Figure for Curves<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        curves(area, self.0)
    }
}

impl Figure for Experts<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        experts(area, self.0)
    }
}

impl Figure for PerClass<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        routing_per_class(area, self.0, self.1)
    }
}

/// Draws `figure` into `<out>/<name>.svg` and `<out>/<name>.png`.
fn render(out: &Path, name: &str, size: (u32, u32), figure: &impl Figure) -> Result<Vec<PathBuf>> {
    let svg = out.join(format!("{name}.svg"));
    {
        let area = SVGBackend::new(&svg, size).into_drawing_area();
        area.fill(&WHITE).map_err(plot_error)?;
        figure.draw(&area)?;
        area.present().map_err(plot_error)?;
    }
    let png = out.join(format!("{name}.png"));
    let mut buffer = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let area = BitMapBackend::with_buffer(&mut buffer, size).into_drawing_area();
        area.fill(&WHITE).map_err(plot_error)?;
        figure.draw(&area)?;
        area.present().map_err(plot_error)?;
    }
    image::RgbImage::from_raw(size.0, size.1, buffer)
        .expect("the buffer has width × height × 3 bytes")
        .save(&png)
        .with_context(|| format!("{}: cannot write", png.display()))?;
    Ok(vec![png, svg])
}

fn plot_error<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow::anyhow!("drawing failed: {e}")
}

fn range(values: &[f64]) -> (f64, f64) {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(hi.abs().max(1.0) * 0.02);
    (lo - pad, hi + pad)
}

/// Axes of epochs `1..=last` against `lo..hi`, with a caption and a light grid.
fn epoch_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    last: f64,
    (lo, hi): (f64, f64),
) -> Result<ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.5..last + 0.5, lo..hi)
        .map_err(plot_error)?;
    chart.configure_mesh().x_desc("epoch").light_line_style(WHITE).draw().map_err(plot_error)?;
    Ok(chart)
}

fn curves<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, h: &History) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (left, right) = area.split_horizontally(area.dim_in_pixel().0 / 2);
    let last = h.epochs.last().copied().unwrap_or(1.0).max(1.0);
    let mut chart = epoch_chart(&left, "loss", last, range(&[h.train_loss.clone(), h.val_loss.clone()].concat()))?;
    for (values, name, colour) in [(&h.train_loss, "train", BLUE), (&h.val_loss, "validation", RED)] {
        let points: Vec<(f64, f64)> = h.epochs.iter().copied().zip(values.iter().copied()).filter(|(_, v)| v.is_finite()).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(plot_error)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, colour.filled()))).map_err(plot_error)?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(plot_error)?;

    let mut chart = epoch_chart(&right, &format!("validation {} (%)", h.metric), last, range(&h.val_metric))?;
    let points: Vec<(f64, f64)> = h.epochs.iter().copied().zip(h.val_metric.iter().copied()).collect();
    chart.draw_series(LineSeries::new(points.clone(), GREEN.stroke_width(2))).map_err(plot_error)?;
    chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, GREEN.filled()))).map_err(plot_error)?;
    Ok(())
}

/// White (0) to dark blue (1).
fn heat(value: f64) -> RGBColor {
    let v = value.clamp(0.0, 1.0);
    let mix = |from: f64, to: f64| (from + (to - from) * v).round() as u8;
    RGBColor(mix(255.0, 8.0), mix(255.0, 48.0), mix(255.0, 107.0))
}

/// A heatmap of `rows × columns` values in [0, 1], each cell labelled with its value.
fn heatmap<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    row_names: &[String],
    column_name: &str,
    column_names: &[String],
    values: &[Vec<f32>],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let columns = values.iter().map(Vec::len).max().unwrap_or(0);
    let rows = row_names.len();
    // plotters' tick computation never returns on an axis without a segment.
    if rows == 0 || columns == 0 {
        bail!("{title}: nothing to draw ({rows} rows, {columns} columns)");
    }
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(140)
        // A segmented range a..b has b - a + 1 segments.
        .build_cartesian_2d((0..columns.max(2) - 1).into_segmented(), (0..rows.max(2) - 1).into_segmented())
        .map_err(plot_error)?;
    // Row 0 at the top.
    let row_at = |y: usize| rows - 1 - y;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(column_name)
        .x_labels(columns)
        .y_labels(rows)
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(c) => column_names.get(*c).cloned().unwrap_or_else(|| c.to_string()),
            _ => String::new(),
        })
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(r) if *r < rows => row_names[row_at(*r)].clone(),
            _ => String::new(),
        })
        .draw()
        .map_err(plot_error)?;
    let max = values.iter().flatten().fold(0f32, |m, &v| m.max(v)).max(1e-6) as f64;
    let centre = plotters::style::text_anchor::Pos::new(plotters::style::text_anchor::HPos::Center, plotters::style::text_anchor::VPos::Center);
    for (r, row) in values.iter().enumerate() {
        let y = row_at(r);
        for (c, &v) in row.iter().enumerate() {
            let cell = [(SegmentValue::Exact(c), SegmentValue::Exact(y)), (SegmentValue::Exact(c + 1), SegmentValue::Exact(y + 1))];
            chart.draw_series(std::iter::once(Rectangle::new(cell, heat(v as f64 / max).filled()))).map_err(plot_error)?;
            let colour = if v as f64 / max > 0.55 { WHITE } else { BLACK };
            let style = ("sans-serif", 13).into_font().color(&colour).pos(centre);
            chart
                .draw_series(std::iter::once(Text::new(format!("{v:.2}"), (SegmentValue::CenterOf(c), SegmentValue::CenterOf(y)), style)))
                .map_err(plot_error)?;
        }
    }
    Ok(())
}

fn experts<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, h: &History) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let names: Vec<String> = h.routing.iter().map(|r| format!("{} (H {:.2})", h.site(r), r.stats.entropy)).collect();
    let values: Vec<Vec<f32>> = h.routing.iter().map(|r| r.stats.share.clone()).collect();
    let widest = h.routing.iter().max_by_key(|r| r.stats.share.len()).expect("checked by the caller");
    let title = if widest.expert.is_some() { "dispatcher weights per expert and layer" } else { "expert usage per layer" };
    heatmap(area, &format!("{title} ({})", h.routing_source), &names, &h.column_axis(widest), &h.columns(widest), &values)
}

fn routing_per_class<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, h: &History, labels: &[String]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let deepest = h.routing.last().expect("checked by the caller");
    if h.experts.is_empty() {
        let (names, values): (Vec<String>, Vec<Vec<f32>>) = labels
            .iter()
            .zip(&deepest.per_class)
            .filter(|(_, row)| !row.is_empty())
            .take(MAX_CLASS_ROWS)
            .map(|(name, row)| (name.chars().take(18).collect(), row.clone()))
            .unzip();
        return heatmap(area, &format!("routing per class, {} ({})", h.site(deepest), h.routing_source), &names, &h.column_axis(deepest), &h.columns(deepest), &values);
    }
    // pMoE: each expert's sources per class, averaged over its prompted layers (the first has
    // no carried prompt: 0 there).
    let (names, values) = expert_class_rows(h, labels);
    let columns = (0..h.experts.len() + 1).map(|j| if j < h.experts.len() { format!("e{j} EPTs") } else { "carried".to_string() }).collect::<Vec<_>>();
    heatmap(area, &format!("dispatcher sources per class, mean over layers ({})", h.routing_source), &names, &h.column_axis(deepest), &columns, &values)
}

/// pMoE's per-class rows: for each expert, each present class's sources averaged over the
/// expert's prompted layers (at most [`MAX_CLASS_ROWS`] rows in all).
fn expert_class_rows(h: &History, labels: &[String]) -> (Vec<String>, Vec<Vec<f32>>) {
    let sources = h.experts.len() + 1;
    let (mut names, mut values) = (Vec::new(), Vec::new());
    for k in 0..h.experts.len() {
        let sites: Vec<&LayerRouting> = h.routing.iter().filter(|r| r.expert == Some(k)).collect();
        for (class, label) in labels.iter().enumerate() {
            if let Some(mean) = LayerRouting::class_mean(&sites, class, sources) {
                names.push(format!("e{k} · {}", label.chars().take(16).collect::<String>()));
                values.push(mean);
            }
        }
    }
    names.truncate(MAX_CLASS_ROWS);
    values.truncate(MAX_CLASS_ROWS);
    (names, values)
}

/// Rows of a per-class heatmap, at most.
const MAX_CLASS_ROWS: usize = 60;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_heatmap_is_refused_instead_of_drawn() {
        register_font().unwrap();
        let mut svg = String::new();
        let area = SVGBackend::with_string(&mut svg, (200, 100)).into_drawing_area();
        let err = heatmap(&area, "empty", &[], "expert", &[], &[]).unwrap_err().to_string();
        assert_eq!(err, "empty: nothing to draw (0 rows, 0 columns)");
        let err = heatmap(&area, "no columns", &["a".to_string()], "expert", &[], &[vec![]]).unwrap_err().to_string();
        assert_eq!(err, "no columns: nothing to draw (1 rows, 0 columns)");
    }
}
