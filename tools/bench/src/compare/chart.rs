//! The comparison as a picture: per workload, latency against percentile for
//! etcd and cairn (the body of the distribution and its tail in one plot),
//! and the two systems' peak memory, written as one PNG.

use std::ops::Range;
use std::path::Path;

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::results::{Compared, Point, Report, Side};

/// Debian's fonts-dejavu-core; any TrueType font will do.
pub(super) const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// The font family every text of the chart asks for.
const FAMILY: &str = "sans-serif";
const PANEL_WIDTH: u32 = 720;
const PANEL_HEIGHT: u32 = 300;
const COLUMNS: usize = 2;
const TITLE_HEIGHT: u32 = 50;
/// Where the percentile axis puts the maximum, past p99.99 at 4 nines.
const MAX_AT: f64 = 4.5;
const TOP_NINES: f64 = 4.0;
const ETCD: RGBColor = RGBColor(31, 119, 180);
const CAIRN: RGBColor = RGBColor(230, 85, 13);

/// Loads a TrueType font for the chart's text, once per process.
pub(super) fn load_font(path: &Path) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(path).map_err(|error| anyhow::anyhow!("font {}: {error}", path.display()))?;
    // The font table keeps a reference for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font(FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{} is not a font", path.display()))
}

/// The x coordinate of a percentile: its nines (p90 is 1, p99 is 2), with
/// the maximum at `MAX_AT`.
fn nines(percentile: f64) -> f64 {
    if percentile >= 100.0 {
        MAX_AT
    } else {
        (-(1.0 - percentile / 100.0).log10()).clamp(0.0, TOP_NINES)
    }
}

/// An axis marked where this chart says and labelled by its own function:
/// plotters' own marks fall on round numbers, not on p50 or 1-2-5 ms.
struct Marked<R> {
    inner: R,
    marks: Vec<f64>,
    label: fn(f64) -> String,
}

impl<R: Ranged<ValueType = f64>> Ranged for Marked<R> {
    type ValueType = f64;
    type FormatOption = NoDefaultFormatting;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.marks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.inner.range()
    }

    fn axis_pixel_range(&self, limit: (i32, i32)) -> Range<i32> {
        self.inner.axis_pixel_range(limit)
    }
}

impl<R: Ranged<ValueType = f64>> ValueFormatter<f64> for Marked<R> {
    fn format_ext(&self, value: &f64) -> String {
        (self.label)(*value)
    }
}

/// The percentiles marked on the x axis.
const MARKED: [(f64, &str); 7] = [
    (0.0, "p0"),
    (50.0, "p50"),
    (90.0, "p90"),
    (99.0, "p99"),
    (99.9, "p99.9"),
    (99.99, "p99.99"),
    (100.0, "max"),
];

/// The label of a marked percentile's x coordinate.
fn percentile_label(x: f64) -> String {
    MARKED
        .iter()
        .find(|(percentile, _)| (nines(*percentile) - x).abs() < 1e-6)
        .map_or_else(String::new, |(_, label)| (*label).to_owned())
}

/// Latencies to mark on a log axis from `low` to `high`: 1, 2 and 5 times
/// the powers of ten between, or only the powers where those are too many.
fn latency_marks(low: f64, high: f64) -> Vec<f64> {
    let first = low.log10().floor() as i32;
    let last = high.log10().ceil() as i32;
    let steps: &[f64] = if last - first > 3 {
        &[1.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    (first..=last)
        .flat_map(|power| steps.iter().map(move |step| step * 10_f64.powi(power)))
        .filter(|mark| (low..=high).contains(mark))
        .collect()
}

fn ms_label(ms: f64) -> String {
    if ms >= 10.0 {
        format!("{ms:.0}")
    } else if ms >= 1.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

/// The latency range of a panel, padded, on a log scale (never zero).
fn latency_range(sides: &[&Side]) -> Option<(f64, f64)> {
    let values = sides
        .iter()
        .flat_map(|side| side.distribution.iter().map(|point| point.ms))
        .filter(|ms| *ms > 0.0);
    let (low, high) = values.fold((f64::MAX, 0.0_f64), |(low, high), ms| {
        (low.min(ms), high.max(ms))
    });
    (high > 0.0).then(|| ((low / 1.5).max(0.001), (high * 1.5).max(low * 2.0)))
}

fn caption(row: &Compared) -> String {
    let rate = |side: &Option<Side>| {
        side.as_ref()
            .map_or_else(|| "-".into(), |side| format!("{:.0}", side.best.per_second))
    };
    let ratio = row
        .throughput_ratio
        .map_or_else(String::new, |ratio| format!(" ({ratio:.2}x)"));
    format!(
        "{}: etcd {}/s, cairn {}/s{ratio}",
        row.workload,
        rate(&row.etcd),
        rate(&row.cairn)
    )
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn draw_error<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {error:?}")
}

/// One workload: latency by percentile, one line per system.
fn draw_workload(area: &Area<'_>, row: &Compared) -> anyhow::Result<()> {
    let sides: Vec<&Side> = [&row.etcd, &row.cairn].into_iter().flatten().collect();
    let Some((low, high)) = latency_range(&sides) else {
        area.titled(&format!("{}: no data", row.workload), (FAMILY, 16))
            .map_err(draw_error)?;
        return Ok(());
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption(row), (FAMILY, 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(52)
        .build_cartesian_2d(
            Marked {
                inner: RangedCoordf64::from(0.0..MAX_AT + 0.1),
                marks: MARKED.map(|(percentile, _)| nines(percentile)).to_vec(),
                label: percentile_label,
            },
            Marked {
                inner: LogCoord::from((low..high).log_scale()),
                marks: latency_marks(low, high),
                label: ms_label,
            },
        )
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .y_desc("latency ms")
        .label_style((FAMILY, 12))
        .axis_desc_style((FAMILY, 12))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(draw_error)?;
    for (name, side, color) in [("etcd", &row.etcd, ETCD), ("cairn", &row.cairn, CAIRN)] {
        let Some(side) = side else { continue };
        let points = side
            .distribution
            .iter()
            .filter(|point| point.ms > 0.0)
            .map(|point: &Point| (nines(point.percentile), point.ms));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(draw_error)?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FAMILY, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(draw_error)?;
    Ok(())
}

/// Both systems' peak memory, summed over their processes.
fn draw_memory(area: &Area<'_>, report: &Report) -> anyhow::Result<()> {
    let memory = &report.memory;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let bars = [
        ("etcd", mib(memory.etcd_total_kib), memory.etcd.len(), ETCD),
        (
            "cairn",
            mib(memory.cairn_total_kib),
            memory.cairn.len(),
            CAIRN,
        ),
    ];
    let top = bars.iter().map(|bar| bar.1).fold(1.0, f64::max) * 1.25;
    let ratio = memory
        .ratio
        .map_or_else(String::new, |ratio| format!(" (cairn/etcd {ratio:.2}x)"));
    let mut chart = ChartBuilder::on(area)
        .caption(format!("peak memory, all processes{ratio}"), (FAMILY, 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(52)
        .build_cartesian_2d(0.0..2.0, 0.0..top)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .light_line_style(WHITE.mix(0.0))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_desc("MiB (sum of VmHWM)")
        .label_style((FAMILY, 12))
        .axis_desc_style((FAMILY, 12))
        .draw()
        .map_err(draw_error)?;
    for (index, (name, total, processes, color)) in bars.into_iter().enumerate() {
        let left = index as f64 + 0.25;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(left, 0.0), (left + 0.5, total)],
                color.filled(),
            )))
            .map_err(draw_error)?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{name}: {total:.0} MiB, {processes} processes"),
                (left - 0.05, total + top * 0.04),
                (FAMILY, 13),
            )))
            .map_err(draw_error)?;
    }
    Ok(())
}

/// Draws every workload and the memory panel to a PNG at `path`.
pub(super) fn draw(report: &Report, path: &Path) -> anyhow::Result<()> {
    let panels = report.workloads.len() + 1;
    let rows = panels.div_ceil(COLUMNS);
    let width = PANEL_WIDTH * COLUMNS as u32;
    let height = TITLE_HEIGHT + PANEL_HEIGHT * u32::try_from(rows)?;
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let title = format!(
        "cairn against etcd: latency by percentile, best of {} rounds of {:.0} s, {} B values",
        report.rounds, report.round_seconds, report.value_bytes
    );
    let root = root.titled(&title, (FAMILY, 22)).map_err(draw_error)?;
    let areas = root.split_evenly((rows, COLUMNS));
    for (area, row) in areas.iter().zip(&report.workloads) {
        draw_workload(area, row)?;
    }
    if let Some(area) = areas.get(report.workloads.len()) {
        draw_memory(area, report)?;
    }
    root.present().map_err(draw_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_map_to_nines_and_back_to_labels() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.0) - 2.0).abs() < 1e-9);
        assert_eq!(nines(0.0), 0.0);
        assert_eq!(nines(99.9999), TOP_NINES);
        assert_eq!(nines(100.0), MAX_AT);
        assert_eq!(percentile_label(2.0), "p99");
        assert_eq!(percentile_label(nines(50.0)), "p50");
        assert_eq!(percentile_label(MAX_AT), "max");
        assert_eq!(percentile_label(2.5), "");
    }

    #[test]
    fn latency_marks_stay_in_range_and_thin_out_over_many_decades() {
        assert_eq!(latency_marks(0.15, 3.0), vec![0.2, 0.5, 1.0, 2.0]);
        assert_eq!(
            latency_marks(0.05, 2000.0),
            vec![0.1, 1.0, 10.0, 100.0, 1000.0]
        );
    }

    #[test]
    fn latency_labels_keep_two_figures() {
        assert_eq!(ms_label(0.25), "0.25");
        assert_eq!(ms_label(2.54), "2.5");
        assert_eq!(ms_label(120.4), "120");
    }
}
